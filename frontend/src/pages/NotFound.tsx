import { Link } from "react-router";

export function NotFound() {
  return (
    <div>
      <h1>Not found</h1>
      <p>
        No page here. Go <Link to="/">home</Link>.
      </p>
    </div>
  );
}
