import { useEffect, useState, type FormEvent } from "react";
import { NavLink, Outlet, useLocation, useNavigate } from "react-router";
import { getToken, setToken } from "../api/client";

export const MAX_QUERY = 500;

export function Layout() {
  return (
    <>
      <a className="skip" href="#main">
        Skip to content
      </a>
      <header className="top">
        <NavLink to="/" className="brand" end>
          lm-saes
        </NavLink>
        <nav aria-label="Main">
          <NavLink to="/" end>
            SAEs
          </NavLink>
          <NavLink to="/compare">Compare</NavLink>
          <NavLink to="/steer">Steer</NavLink>
          <NavLink to="/circuits">Circuits</NavLink>
          <NavLink to="/jobs">Jobs</NavLink>
        </nav>
        <SearchBox />
        <TokenForm />
      </header>
      <main id="main" tabIndex={-1}>
        <Outlet />
      </main>
    </>
  );
}

function TokenForm() {
  const [value, setValue] = useState(getToken());
  const [saved, setSaved] = useState(false);
  const save = (e: FormEvent) => {
    e.preventDefault();
    setToken(value.trim());
    setSaved(true);
  };
  return (
    <form className="token-form" onSubmit={save}>
      <label htmlFor="api-token">API token</label>
      <input
        id="api-token"
        type="password"
        autoComplete="off"
        value={value}
        onChange={(e) => {
          setValue(e.target.value);
          setSaved(false);
        }}
        placeholder="bearer token (optional)"
      />
      <button type="submit">Save</button>
      <span aria-live="polite" className="note">
        {saved ? "saved" : ""}
      </span>
    </form>
  );
}

/** Feature search by meaning, from every page: opens /search?q=… (the query stays in the box there). */
export function SearchBox() {
  const navigate = useNavigate();
  const location = useLocation();
  const current = location.pathname === "/search" ? (new URLSearchParams(location.search).get("q") ?? "") : null;
  const [value, setValue] = useState(current ?? "");
  useEffect(() => {
    if (current !== null) setValue(current);
  }, [current]);
  const submit = (e: FormEvent) => {
    e.preventDefault();
    const q = value.trim();
    if (!q) return;
    const params = new URLSearchParams(location.pathname === "/search" ? location.search : "");
    params.set("q", q);
    navigate(`/search?${params.toString()}`);
  };
  return (
    <form role="search" className="search-form" onSubmit={submit}>
      <label htmlFor="feature-search" className="visually-hidden">
        Search features
      </label>
      <input
        id="feature-search"
        type="search"
        value={value}
        maxLength={MAX_QUERY}
        onChange={(e) => setValue(e.target.value)}
        placeholder="Search features by meaning"
      />
      <button type="submit" disabled={!value.trim()}>
        Search
      </button>
    </form>
  );
}
