import { useState, type FormEvent } from "react";
import { NavLink, Outlet } from "react-router";
import { getToken, setToken } from "../api/client";

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
          <NavLink to="/steer">Steer</NavLink>
          <NavLink to="/circuits">Circuits</NavLink>
          <NavLink to="/jobs">Jobs</NavLink>
        </nav>
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
