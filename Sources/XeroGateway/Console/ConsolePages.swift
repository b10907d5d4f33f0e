import Foundation
import HTTPTypes
import Hummingbird
import Mustache
import NIOCore

/// The console's pages: swift-mustache templates, one layout (`{{<layout}}`) that every page
/// fills, and a small stylesheet and script of our own (no Node toolchain). Values are HTML-escaped
/// by `{{x}}`; nothing a user typed is ever rendered raw.
enum ConsolePages {
    static let library: MustacheLibrary = {
        var lib = MustacheLibrary()
        for (name, text) in templates {
            do { try lib.register(text, named: name) } catch { fatalError("console template \(name): \(error)") }
        }
        return lib
    }()

    /// A page: `data` fills the template; the layout takes `title`, `user`, `projects`, `csrf`, `nav_*`.
    static func render(_ name: String, _ data: [String: Any], status: HTTPResponse.Status = .ok, headers: HTTPFields = [:]) -> Response {
        let html = library.render(data, withTemplate: name) ?? "<!doctype html><p>missing page \(name)</p>"
        var h = headers
        h[.contentType] = "text/html; charset=utf-8"
        h[.cacheControl] = "no-store"
        h[HTTPField.Name("X-Frame-Options")!] = "DENY"
        h[HTTPField.Name("Content-Security-Policy")!] = "default-src 'self'; style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
        return Response(status: status, headers: h, body: .init(byteBuffer: ByteBuffer(string: html)))
    }

    static func forbidden(_ message: String) -> Response {
        render("message", ["title": "Refused", "heading": "Refused", "message": message], status: .forbidden)
    }

    static func notFound() -> Response {
        render("message", ["title": "Not found", "heading": "Not found", "message": "There is no such page in your projects."], status: .notFound)
    }

    static func redirect(_ location: String) -> Response {
        Response(status: .seeOther, headers: [.location: location, .cacheControl: "no-store"])
    }

    static let templates: [String: String] = [
        "layout": """
        <!doctype html>
        <html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
        <title>{{title}} · Xerotier</title>{{#refresh}}<meta http-equiv="refresh" content="{{refresh}}">{{/refresh}}
        <style>
        :root { --ink:#1d2330; --muted:#5d6678; --line:#dde2ea; --bg:#f6f7fa; --card:#fff; --accent:#2f5bea; --bad:#b42318; --good:#067647; }
        * { box-sizing: border-box; }
        body { margin:0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color:var(--ink); background:var(--bg); }
        header { background:#111827; color:#fff; }
        header .bar { max-width: 1040px; margin:0 auto; padding: 12px 20px; display:flex; gap:18px; align-items:center; }
        header a { color:#cfd6e4; text-decoration:none; } header a.on, header a:hover { color:#fff; }
        header .brand { font-weight:700; color:#fff; margin-right:12px; letter-spacing:.02em; }
        header .grow { flex:1; }
        header form { margin:0; display:inline; }
        main { max-width:1040px; margin: 24px auto; padding: 0 20px; }
        h1 { font-size: 24px; margin: 0 0 16px; } h2 { font-size: 18px; margin: 0 0 12px; }
        .card { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:20px; margin-bottom:20px; }
        .narrow { max-width: 420px; margin: 40px auto; }
        label { display:block; font-weight:600; margin: 12px 0 4px; }
        input[type=text], input[type=email], input[type=password], select { width:100%; padding:9px 10px; border:1px solid var(--line); border-radius:7px; font:inherit; }
        button, .button { background:var(--accent); color:#fff; border:0; border-radius:7px; padding:9px 16px; font:inherit; font-weight:600; cursor:pointer; text-decoration:none; display:inline-block; }
        button.plain { background:none; color:#cfd6e4; padding:0; font-weight:400; }
        button.danger { background:var(--bad); }
        table { width:100%; border-collapse: collapse; } th, td { text-align:left; padding:8px 6px; border-bottom:1px solid var(--line); vertical-align: top; }
        th { color:var(--muted); font-weight:600; font-size:13px; }
        .muted { color:var(--muted); } .error { background:#fef3f2; color:var(--bad); border:1px solid #fecdca; padding:10px 12px; border-radius:7px; margin-bottom:12px; }
        .notice { background:#ecfdf3; color:var(--good); border:1px solid #abefc6; padding:10px 12px; border-radius:7px; margin-bottom:12px; }
        pre { background:#0f172a; color:#e2e8f0; padding:12px 14px; border-radius:8px; overflow:auto; font-size:13px; margin:6px 0 0; }
        .snippet { position:relative; margin-bottom:14px; } .snippet button { position:absolute; top:32px; right:8px; padding:3px 10px; font-size:12px; }
        .tiers { display:grid; grid-template-columns: repeat(auto-fill, minmax(220px, 1fr)); gap:10px; }
        .tier { border:1px solid var(--line); border-radius:8px; padding:10px 12px; display:block; font-weight:400; margin:0; }
        .tier input { margin-right:6px; } .tier b { font-size:15px; } .tier small { display:block; color:var(--muted); }
        code.key { font-size:14px; background:#fff7e6; padding:6px 8px; border-radius:6px; display:inline-block; word-break:break-all; }
        .row { display:flex; gap:12px; } .row > * { flex:1; }
        </style></head><body>
        <header><div class="bar">
          <a class="brand" href="/">Xerotier</a>
          {{#user}}
          <a href="/console" {{#nav_dashboard}}class="on"{{/nav_dashboard}}>Dashboard</a>
          <a href="/console/keys" {{#nav_keys}}class="on"{{/nav_keys}}>API keys</a>
          <a href="/console/usage" {{#nav_usage}}class="on"{{/nav_usage}}>Usage</a>
          <a href="/console/agents" {{#nav_agents}}class="on"{{/nav_agents}}>Agents</a>
          {{#admin}}<a href="/console/admin/ops" {{#nav_ops}}class="on"{{/nav_ops}}>Ops</a>{{/admin}}
          <span class="grow"></span>
          {{#switchable}}
          <form method="post" action="/console/project"><input type="hidden" name="_csrf" value="{{csrf}}">
            <select name="project" onchange="this.form.submit()" aria-label="Project">
            {{#projects}}<option value="{{id}}" {{#current}}selected{{/current}}>{{name}}</option>{{/projects}}
            </select></form>
          {{/switchable}}
          <span class="muted">{{email}}</span>
          <form method="post" action="/console/logout"><input type="hidden" name="_csrf" value="{{csrf}}"><button class="plain" id="logout">Log out</button></form>
          {{/user}}
          {{^user}}<span class="grow"></span><a href="/console/login">Log in</a><a href="/console/register">Sign up</a>{{/user}}
        </div></header>
        <main>{{$content}}{{/content}}</main>
        <script>
        document.querySelectorAll('.snippet button').forEach(function (b) {
          b.addEventListener('click', function () {
            var text = b.parentElement.querySelector('pre').innerText;
            if (navigator.clipboard) { navigator.clipboard.writeText(text); }
            b.textContent = 'Copied';
          });
        });
        </script>
        </body></html>
        """,
        "message": """
        {{<layout}}{{$content}}<div class="card narrow"><h1>{{heading}}</h1><p>{{message}}</p><p><a href="/console">Back to the console</a></p></div>{{/content}}{{/layout}}
        """,
        "home": """
        {{<layout}}{{$content}}
        <div class="card narrow" style="max-width:640px">
          <h1>Open models behind the OpenAI API</h1>
          <p>Create an endpoint for a model and a service tier, take an API key, and point the official OpenAI SDK
          (or curl) at your endpoint's URL. Chat completions, streaming, embeddings, batches.</p>
          <p>{{#signup}}<a class="button" href="/console/register">Sign up</a> &nbsp;{{/signup}}<a href="/console/login">Log in</a></p>
        </div>
        {{/content}}{{/layout}}
        """,
        "register": """
        {{<layout}}{{$content}}
        <div class="card narrow"><h1>Create your account</h1>
          {{#error}}<div class="error" id="error">{{error}}</div>{{/error}}
          {{#closed}}<p>Sign-up is closed on this platform. Ask its administrator for an account.</p>{{/closed}}
          {{^closed}}
          <form method="post" action="/console/register">
            <input type="hidden" name="_csrf" value="{{csrf}}">
            <label for="email">Email</label><input type="email" id="email" name="email" value="{{email_value}}" required autocomplete="email">
            <label for="password">Password</label><input type="password" id="password" name="password" required autocomplete="new-password" minlength="10">
            <p class="muted" style="margin:4px 0 0">At least 10 characters. The address is not verified.</p>
            <label for="project">Project name</label><input type="text" id="project" name="project" value="{{project_value}}" placeholder="My app">
            {{#invite}}<label for="invite">Invite code</label><input type="text" id="invite" name="invite" required>{{/invite}}
            <p><button id="register">Sign up</button></p>
          </form>
          <p class="muted">Have an account? <a href="/console/login">Log in</a>.</p>
          {{/closed}}
        </div>
        {{/content}}{{/layout}}
        """,
        "login": """
        {{<layout}}{{$content}}
        <div class="card narrow"><h1>Log in</h1>
          {{#error}}<div class="error" id="error">{{error}}</div>{{/error}}
          <form method="post" action="/console/login">
            <input type="hidden" name="_csrf" value="{{csrf}}">
            <label for="email">Email</label><input type="email" id="email" name="email" value="{{email_value}}" required autocomplete="email">
            <label for="password">Password</label><input type="password" id="password" name="password" required autocomplete="current-password">
            <p><button id="login">Log in</button></p>
          </form>
          <p class="muted">New here? <a href="/console/register">Create an account</a>.</p>
        </div>
        {{/content}}{{/layout}}
        """,
        "dashboard": """
        {{<layout}}{{$content}}
        <h1>{{project_name}}</h1>
        {{#error}}<div class="error" id="error">{{error}}</div>{{/error}}
        {{#notice}}<div class="notice" id="notice">{{notice}}</div>{{/notice}}
        <div class="card"><h2>Models</h2>
          {{^models}}<p class="muted">No worker serves a model right now.</p>{{/models}}
          <table>{{#models}}<tr class="model"><td><b>{{name}}</b></td><td class="muted">{{source}}</td></tr>{{/models}}</table>
        </div>
        <div class="card"><h2>Endpoints</h2>
          {{^endpoints}}<p class="muted" id="no-endpoints">No endpoint yet. Create one below.</p>{{/endpoints}}
          {{#endpoints}}
          <div class="endpoint" id="endpoint-{{slug}}">
            <p><b>{{slug}}</b> · {{model}} · tier <b>{{tier}}</b></p>
            <p>Base URL <code class="key base-url">{{base_url}}</code></p>
            <div class="snippet"><b>Python</b><button type="button">Copy</button><pre class="python">{{python}}</pre></div>
            <div class="snippet"><b>Node</b><button type="button">Copy</button><pre class="node">{{node}}</pre></div>
            <div class="snippet"><b>curl</b><button type="button">Copy</button><pre class="curl">{{curl}}</pre></div>
            <p class="muted">Put an API key from the <a href="/console/keys">API keys</a> page where the snippets say YOUR_API_KEY.</p>
          </div>
          {{/endpoints}}
        </div>
        <div class="card"><h2>Create an endpoint</h2>
          <form method="post" action="/console/endpoints">
            <input type="hidden" name="_csrf" value="{{csrf}}">
            <div class="row">
              <div><label for="slug">Name (in the URL)</label><input type="text" id="slug" name="slug" placeholder="my-endpoint" pattern="[a-z0-9][a-z0-9-]*" required></div>
              <div><label for="model">Model</label>
                <input type="text" id="model" name="model" list="model-list" value="{{first_model}}" required>
                <datalist id="model-list">{{#models}}<option value="{{name}}">{{name}} — {{source}}</option>{{/models}}</datalist>
              </div>
            </div>
            <label>Service tier</label>
            <div class="tiers">
            {{#tiers}}<label class="tier"><input type="radio" name="tier" value="{{name}}" {{#default}}checked{{/default}}><b>{{name}}</b>
              <small>{{limits}}</small><small>{{prices}}</small></label>{{/tiers}}
            </div>
            <p><button id="create-endpoint">Create Endpoint</button></p>
          </form>
        </div>
        {{/content}}{{/layout}}
        """,
        "keys": """
        {{<layout}}{{$content}}
        <h1>API keys</h1>
        {{#error}}<div class="error" id="error">{{error}}</div>{{/error}}
        {{#new_key}}<div class="notice">Your new key — copy it now, it is shown only once:<br><code class="key" id="new-key">{{new_key}}</code></div>{{/new_key}}
        <div class="card"><h2>Keys of this project</h2>
          <table><tr><th>Name</th><th>Key</th><th>Scopes</th><th>Allowed from</th><th>Created</th><th>State</th><th></th></tr>
          {{#keys}}<tr class="key-row" id="key-{{id}}"><td>{{name}}</td><td><code>{{prefix}}</code></td><td>{{scopes}}</td><td>{{allowed}}</td><td>{{created}}</td><td class="state">{{state}}</td>
            <td>{{#live}}<form method="post" action="/console/keys/{{id}}/rotate" class="rotate-form"><input type="hidden" name="_csrf" value="{{csrf}}">
              <select name="grace_seconds" aria-label="Grace period" style="width:auto"><option value="0">old key ends now</option><option value="3600" selected>old key works 1 hour</option><option value="86400">old key works 1 day</option></select>
              <button class="rotate">Rotate</button></form>
              <form method="post" action="/console/keys/{{id}}/allowed-ips" class="allow-form"><input type="hidden" name="_csrf" value="{{csrf}}">
              <input type="text" name="allowed_ips" value="{{allowed_input}}" aria-label="Allowed from" placeholder="anywhere" style="width:12em"><button class="set-allowed">Set allow-list</button></form>
              <form method="post" action="/console/keys/{{id}}/revoke"><input type="hidden" name="_csrf" value="{{csrf}}"><button class="danger revoke">Revoke</button></form>{{/live}}</td></tr>{{/keys}}
          </table>
          {{^keys}}<p class="muted">No key yet.</p>{{/keys}}
        </div>
        <div class="card"><h2>Create a key</h2>
          <form method="post" action="/console/keys">
            <input type="hidden" name="_csrf" value="{{csrf}}">
            <label for="key-name">Name</label><input type="text" id="key-name" name="name" placeholder="my app">
            <label>Scopes</label>
            <label class="tier" style="display:inline-block"><input type="checkbox" name="scope" value="inference" checked> inference (call endpoints)</label>
            <label class="tier" style="display:inline-block"><input type="checkbox" name="scope" value="management"> management (manage the project)</label>
            <label for="allowed-ips">Allowed addresses (optional: IPs or CIDR blocks, separated by spaces or commas; empty = any)</label>
            <input type="text" id="allowed-ips" name="allowed_ips" placeholder="203.0.113.7, 10.0.0.0/8">
            <p><button id="create-key">Create key</button></p>
          </form>
        </div>
        {{/content}}{{/layout}}
        """,
        "usage": """
        {{<layout}}{{$content}}
        <h1>Usage</h1>
        <div class="card">
          {{^rows}}<p class="muted" id="no-usage">No request has been billed yet.</p>{{/rows}}
          {{#has_rows}}
          <svg width="100%" height="{{chart_height}}" viewBox="0 0 600 {{chart_height}}" role="img" aria-label="Requests per endpoint">
          {{#bars}}<text x="0" y="{{text_y}}" font-size="13" fill="#5d6678">{{label}}</text>
          <rect x="160" y="{{y}}" width="{{width}}" height="18" rx="3" fill="#2f5bea"></rect>
          <text x="{{value_x}}" y="{{text_y}}" font-size="13" fill="#1d2330">{{value}}</text>{{/bars}}
          </svg>
          <table id="usage"><tr><th>Endpoint</th><th>Requests</th><th>Input tokens</th><th>Output tokens</th><th>Cost (USD)</th></tr>
          {{#rows}}<tr class="usage-row"><td>{{endpoint}}</td><td class="requests">{{requests}}</td><td>{{input}}</td><td>{{output}}</td><td>{{cost}}</td></tr>{{/rows}}
          </table>
          {{/has_rows}}
        </div>
        {{#has_rows}}
        <div class="card"><h2>Per day (UTC, last 14 days)</h2>
          <svg width="100%" height="160" viewBox="0 0 600 160" role="img" aria-label="Requests per day" id="day-chart">
          {{#day_bars}}<rect x="{{x}}" y="{{y}}" width="32" height="{{height}}" rx="3" fill="#2f5bea"></rect>
          <text x="{{text_x}}" y="{{value_y}}" font-size="11" text-anchor="middle" fill="#1d2330">{{value}}</text>
          <text x="{{text_x}}" y="155" font-size="10" text-anchor="middle" fill="#5d6678">{{label}}</text>{{/day_bars}}
          </svg>
          <table id="usage-days"><tr><th>Day</th><th>Endpoint</th><th>Requests</th><th>Input tokens</th><th>Output tokens</th><th>Cost (USD)</th></tr>
          {{#day_rows}}<tr class="usage-day-row"><td class="day">{{day}}</td><td>{{endpoint}}</td><td class="requests">{{requests}}</td><td>{{input}}</td><td>{{output}}</td><td>{{cost}}</td></tr>{{/day_rows}}
          </table>
        </div>
        {{/has_rows}}
        {{/content}}{{/layout}}
        """,
        "agents": """
        {{<layout}}{{$content}}
        <h1>Agents</h1>
        <p class="muted">Your own workers ("agents") join with a join key and serve only this project's endpoints
        (those whose fleet allows them). Start one with <code>xerotier worker --join-key … --router-key …</code>.</p>
        {{#error}}<div class="error" id="error">{{error}}</div>{{/error}}
        {{#new_join_key}}<div class="notice">Your new join key — copy it now, it is shown only once:<br><code class="key" id="new-join-key">{{new_join_key}}</code></div>{{/new_join_key}}
        <div class="card"><h2>Live agents</h2>
          {{^agents}}<p class="muted" id="no-agents">No agent of this project is connected.</p>{{/agents}}
          {{#has_agents}}<table><tr><th>Id</th><th>State</th><th>Slots</th><th>Running</th><th>Models</th><th>Heartbeat</th></tr>
          {{#agents}}<tr class="agent" id="agent-{{id}}"><td>{{id}}</td><td>{{state}}</td><td>{{slots}}</td><td>{{inflight}}</td><td>{{models}}</td><td>{{age}}</td></tr>{{/agents}}
          </table>{{/has_agents}}
        </div>
        <div class="card"><h2>Join keys</h2>
          <table><tr><th>Name</th><th>Id</th><th>Created</th><th>State</th><th></th></tr>
          {{#join_keys}}<tr class="join-key" id="jk-{{id}}"><td>{{name}}</td><td><code>{{id}}</code></td><td>{{created}}</td><td class="state">{{state}}</td>
            <td>{{#live}}<form method="post" action="/console/join-keys/{{id}}/revoke"><input type="hidden" name="_csrf" value="{{csrf}}"><button class="danger revoke-join-key">Revoke</button></form>{{/live}}</td></tr>{{/join_keys}}
          </table>
          <form method="post" action="/console/join-keys" style="margin-top:12px">
            <input type="hidden" name="_csrf" value="{{csrf}}">
            <label for="join-key-name">Name</label><input type="text" id="join-key-name" name="name" placeholder="office GPUs">
            <p><button id="create-join-key">Create join key</button></p>
          </form>
        </div>
        {{/content}}{{/layout}}
        """,
        "ops": """
        {{<layout}}{{$content}}
        <h1>Operations</h1>
        <p class="muted">Refreshes every 2 seconds. Read from the routers' records in Redis.</p>
        <div class="card"><h2>Tiers</h2>
          <table><tr><th>Tier</th><th>Queued</th><th>Running</th><th>Submitted</th><th>Completed</th><th>Expired</th></tr>
          {{#tiers}}<tr class="tier-row" id="tier-{{tier}}"><td>{{tier}}</td><td class="depth">{{depth}}</td><td>{{inflight}}</td><td>{{submitted_total}}</td><td>{{completed_total}}</td><td>{{expired_total}}</td></tr>{{/tiers}}
          </table>
        </div>
        <div class="card"><h2>Routers</h2>
          <table><tr><th>Id</th><th>Last seen</th></tr>{{#routers}}<tr><td>{{id}}</td><td>{{age}}</td></tr>{{/routers}}</table>
        </div>
        <div class="card"><h2>Workers</h2>
          <table><tr><th>Id</th><th>Fleet</th><th>State</th><th>Slots</th><th>Free</th><th>Running</th><th>Breaker</th><th>Heartbeat</th></tr>
          {{#workers}}<tr class="worker"><td>{{id}}</td><td>{{fleet}}</td><td>{{state}}</td><td>{{slots}}</td><td>{{free}}</td><td>{{inflight}}</td><td>{{breaker}}</td><td>{{age}}</td></tr>{{/workers}}
          </table>
        </div>
        <div class="card"><h2>Jobs waiting and running</h2>
          {{^jobs}}<p class="muted">None right now.</p>{{/jobs}}
          <table>{{#has_jobs}}<tr><th>Request</th><th>Tier</th><th>State</th><th>Project</th><th>Worker</th><th>Age</th><th>Queued for</th></tr>{{/has_jobs}}
          {{#jobs}}<tr class="job" id="job-{{id}}"><td><code>{{id}}</code></td><td>{{tier}}</td><td>{{state}}</td><td>{{project}}</td><td>{{worker}}</td><td>{{age}}</td><td>{{queued_for}}</td></tr>{{/jobs}}
          </table>
        </div>
        {{/content}}{{/layout}}
        """,
    ]
}
