/**
 * The agentbox dashboard: sign in with a token (or none where the daemon needs none), then the
 * sandboxes list, a page per sandbox, and an overview. Served by the daemon at `/`, same origin as the API.
 */
import { render } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import { ApiError, api, setUnauthorizedHandler, signIn, signOut, storedToken } from './api.js';
import { interceptLinks, navigate, usePath } from './router.js';
import { ErrorBox, Status } from './ui.js';
import { SandboxesPage } from './sandboxes.js';
import { SandboxPage } from './sandbox.js';
import { OverviewPage } from './overview.js';
import './style.css';

type Phase = { kind: 'checking' } | { kind: 'signed-out'; error?: unknown } | { kind: 'signed-in'; anonymous: boolean };

/** Whether the daemon takes this token (or no token at all, for null). */
async function probe(token: string | null): Promise<void> {
  await api('/v1/sandboxes?labels=agentbox.dashboard/probe%3D1', { token });
}

/** A token handed over in the address's fragment (`agentbox dashboard` prints one): taken, then removed from the address bar. */
function tokenFromFragment(): string | null {
  const m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (!m) return null;
  history.replaceState(null, '', location.pathname + location.search);
  try {
    return decodeURIComponent(m[1] as string);
  } catch {
    return null;
  }
}

function App() {
  const [phase, setPhase] = useState<Phase>({ kind: 'checking' });
  useEffect(() => {
    setUnauthorizedHandler((err) => {
      signOut();
      setPhase({ kind: 'signed-out', error: err });
    });
    void (async () => {
      const handed = tokenFromFragment();
      const candidate = handed ?? storedToken();
      if (candidate) {
        try {
          await probe(candidate);
          signIn(candidate, false);
          setPhase({ kind: 'signed-in', anonymous: false });
          return;
        } catch (err) {
          signOut();
          setPhase({ kind: 'signed-out', error: err });
          return;
        }
      }
      try {
        await probe(null);
        signIn(null, false);
        setPhase({ kind: 'signed-in', anonymous: true });
      } catch (err) {
        setPhase({ kind: 'signed-out', ...(err instanceof ApiError && err.status === 401 ? {} : { error: err }) });
      }
    })();
  }, []);

  if (phase.kind === 'checking') return <main id="main" class="center"><Status>Connecting to the daemon…</Status></main>;
  if (phase.kind === 'signed-out') return <SignIn error={phase.error} onSignedIn={() => setPhase({ kind: 'signed-in', anonymous: false })} />;
  return (
    <Shell
      anonymous={phase.anonymous}
      onSignOut={() => {
        signOut();
        setPhase({ kind: 'signed-out' });
        navigate('/', true);
      }}
    />
  );
}

function SignIn({ error, onSignedIn }: { error?: unknown; onSignedIn: () => void }) {
  const [token, setToken] = useState('');
  const [remember, setRemember] = useState(false);
  const [busy, setBusy] = useState(false);
  const [problem, setProblem] = useState<unknown>(error);
  const input = useRef<HTMLInputElement>(null);
  useEffect(() => input.current?.focus(), []);
  const submit = async (e: Event): Promise<void> => {
    e.preventDefault();
    const t = token.trim();
    if (!t) {
      setProblem(new Error('Enter an API token.'));
      return;
    }
    setBusy(true);
    setProblem(undefined);
    try {
      await probe(t);
      signIn(t, remember);
      onSignedIn();
    } catch (err) {
      setProblem(err instanceof ApiError && err.status === 401 ? new ApiError(401, err.code, 'That token was not accepted.', err.hint ?? err.message) : err);
    } finally {
      setBusy(false);
    }
  };
  return (
    <main id="main" class="signin">
      <h1>agentbox</h1>
      <form onSubmit={(e) => void submit(e)} class="card" aria-describedby="signin-help">
        <h2>Sign in</h2>
        <p id="signin-help" class="muted">A tenant's API token shows that tenant's sandboxes. It is kept in this tab only, unless you ask to remember it.</p>
        <label for="token">API token</label>
        <input
          id="token"
          name="token"
          type="password"
          autocomplete="current-password"
          spellcheck={false}
          required
          ref={input}
          value={token}
          onInput={(e) => setToken((e.target as HTMLInputElement).value)}
        />
        <label class="check">
          <input type="checkbox" checked={remember} onChange={(e) => setRemember((e.target as HTMLInputElement).checked)} /> Remember on this device
        </label>
        <button type="submit" class="primary" disabled={busy}>
          {busy ? 'Signing in…' : 'Sign in'}
        </button>
        <ErrorBox error={problem} />
      </form>
    </main>
  );
}

function Shell({ anonymous, onSignOut }: { anonymous: boolean; onSignOut: () => void }) {
  const path = usePath();
  const [tenant, setTenant] = useState<string | null>(null);
  useEffect(() => {
    if (path === '/' || path === '') navigate('/sandboxes', true);
  }, [path]);
  let page;
  const sbx = /^\/sandboxes\/([^/]+)\/?$/.exec(path);
  if (sbx) page = <SandboxPage id={decodeURIComponent(sbx[1] as string)} onTenant={setTenant} />;
  else if (path.startsWith('/overview')) page = <OverviewPage />;
  else if (path === '/' || path.startsWith('/sandboxes')) page = <SandboxesPage onTenant={setTenant} />;
  else
    page = (
      <section>
        <h1>Not found</h1>
        <p>
          No page at {path}. <a href="/sandboxes">Sandboxes</a>
        </p>
      </section>
    );
  useEffect(() => {
    document.title = sbx ? `${decodeURIComponent(sbx[1] as string)} · agentbox` : path.startsWith('/overview') ? 'Overview · agentbox' : 'Sandboxes · agentbox';
  }, [path]);
  const current = (p: string): { 'aria-current'?: 'page' } => (path.startsWith(p) ? { 'aria-current': 'page' } : {});
  return (
    <>
      <a class="skip" href="#main">
        Skip to content
      </a>
      <header class="top">
        <nav aria-label="Main">
          <span class="brand">agentbox</span>
          <a href="/overview" {...current('/overview')}>
            Overview
          </a>
          <a href="/sandboxes" {...current('/sandboxes')}>
            Sandboxes
          </a>
        </nav>
        <div class="who">
          <span class="muted">{anonymous ? 'no token needed here' : tenant ? `tenant ${tenant}` : 'signed in'}</span>
          <button type="button" onClick={onSignOut}>
            Sign out
          </button>
        </div>
      </header>
      <main id="main" tabIndex={-1}>
        {page}
      </main>
    </>
  );
}

interceptLinks();
render(<App />, document.getElementById('app') as HTMLElement);
