"""The web console in a real browser (Debian's chromium and chromium-driver, headless, driven by
selenium): sign up, create an endpoint, create a key, then call the endpoint through the OpenAI SDK
and with the page's own snippets, and see the request on the usage page. Then what must be refused:
another user's project through any page or URL, a POST without the CSRF token, repeated wrong
passwords, and sign-up under `invite` and `closed`. Every page visited is saved as a screenshot in
the test's temporary directory. The engine is THE SIMULATOR (the test is about the platform)."""
import re
import shutil
import subprocess
import time
import uuid

import httpx
import pytest

from conftest import BIN, TEST_CONFIG, Platform, wait_for

MODEL = "console-model"
PASSWORD = "harbour-lights-42"


def chromium_driver():
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, "chromium and chromium-driver are installed by scripts/setup.sh"
    opts = Options()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(driver), options=opts)


@pytest.fixture(scope="module")
def cp(redis, tmp_path_factory):
    # 1 MiB of Files per self-service project, so the storage quota can be reached.
    p = Platform(redis, tmp_path_factory.mktemp("console"), config=TEST_CONFIG + "console: {max_storage_mb: 1}\n")
    p.start_router()
    p.open = p.start_gateway(None, "--signup", "open")
    p.invite = p.start_gateway(None, "--signup", "invite")
    p.closed = p.start_gateway(None, "--signup", "closed")
    p.start_worker("console-w1", "--models", MODEL, "--sim-tpot-ms", "1")
    p.shots = p.tmp / "screenshots"
    p.shots.mkdir()
    yield p
    p.shutdown()


@pytest.fixture
def browser(cp):
    d = chromium_driver()
    yield d
    d.quit()


def shot(cp, d, name):
    d.save_screenshot(str(cp.shots / f"{name}.png"))


def sign_up(d, gateway, email, project="Harbour app"):
    d.get(gateway + "/")
    d.find_element("link text", "Sign up").click()
    d.find_element("id", "email").send_keys(email)
    d.find_element("id", "password").send_keys(PASSWORD)
    d.find_element("id", "project").send_keys(project)
    d.find_element("id", "register").click()
    wait_for(lambda: d.current_url.endswith("/console"), what="the dashboard after sign-up")


def test_sign_up_create_an_endpoint_and_a_key_then_call_it(cp, browser):
    d = browser
    email = f"ada-{uuid.uuid4().hex[:8]}@example.com"
    d.get(cp.open + "/")
    shot(cp, d, "home")
    d.get(cp.open + "/console/login")
    shot(cp, d, "login")
    d.get(cp.open + "/console/register")
    shot(cp, d, "register")
    sign_up(d, cp.open, email)
    shot(cp, d, "dashboard-empty")
    assert d.find_element("id", "no-endpoints")
    assert MODEL in d.page_source, "the model catalog lists what the live worker serves"
    # Create Endpoint: a name, the model, the default tier.
    d.find_element("id", "slug").send_keys("chat")
    model = d.find_element("id", "model")
    model.clear()
    model.send_keys(MODEL)
    d.find_element("id", "create-endpoint").click()
    wait_for(lambda: d.find_elements("id", "endpoint-chat"), what="the new endpoint on the dashboard")
    shot(cp, d, "dashboard-endpoint")
    base_url = d.find_element("css selector", "#endpoint-chat .base-url").text
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/proj_[a-z0-9]+/chat/v1", base_url), base_url
    python_snippet = d.find_element("css selector", "#endpoint-chat pre.python").text
    curl_snippet = d.find_element("css selector", "#endpoint-chat pre.curl").text
    assert "YOUR_API_KEY" in python_snippet and base_url in python_snippet

    # API keys page: a key, shown once.
    d.find_element("link text", "API keys").click()
    d.find_element("id", "key-name").send_keys("my app")
    d.find_element("id", "create-key").click()
    wait_for(lambda: d.find_elements("id", "new-key"), what="the new key on the page")
    key = d.find_element("id", "new-key").text
    shot(cp, d, "keys-created")
    assert key.startswith("xero_"), key
    d.get(cp.open + "/console/keys")
    assert key not in d.page_source, "the key is shown once, then only its prefix"

    # Outside the browser: the official SDK with that key.
    from openai import OpenAI
    answer = OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=30).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hello"}], max_tokens=8)
    assert answer.choices[0].message.content

    # The snippets as the page shows them, with the key put in: they run and answer.
    py = subprocess.run([".venv/bin/python", "-c", python_snippet.replace("YOUR_API_KEY", key)], capture_output=True, text=True, timeout=60)
    assert py.returncode == 0 and py.stdout.strip(), py.stderr
    sh = subprocess.run(["bash", "-c", curl_snippet.replace("YOUR_API_KEY", key)], capture_output=True, text=True, timeout=60)
    assert sh.returncode == 0 and '"choices"' in sh.stdout, sh.stdout + sh.stderr

    # The usage page shows the requests (settlement is flushed every few hundred ms).
    def billed():
        d.get(cp.open + "/console/usage")
        cells = d.find_elements("css selector", "tr.usage-row td.requests")
        return cells and int(cells[0].text) >= 3
    wait_for(billed, timeout=20, what="the requests on the usage page")
    shot(cp, d, "usage")
    assert "<svg" in d.page_source
    # The same requests under today's date (UTC) in the per-day table, with its chart.
    today = time.strftime("%Y-%m-%d", time.gmtime())
    days = d.find_elements("css selector", "tr.usage-day-row")
    assert days and days[0].find_element("css selector", "td.day").text == today
    assert int(days[0].find_element("css selector", "td.requests").text) >= 3
    assert d.find_element("id", "day-chart")
    d.get(cp.open + "/console/agents")
    assert d.find_element("id", "no-agents")
    shot(cp, d, "agents")

    # Revoke the key in the browser: the SDK is refused at once after.
    d.get(cp.open + "/console/keys")
    d.find_element("css selector", "button.revoke").click()
    wait_for(lambda: "revoked" in d.find_element("css selector", "tr.key-row td.state").text, what="revoked")
    shot(cp, d, "keys-revoked")
    time.sleep(2.5)   # the gateways' key cache (2 s)
    from openai import AuthenticationError
    with pytest.raises(AuthenticationError):
        OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=30).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hello"}], max_tokens=8)


class Session:
    """A console session without a browser: the cookies and the CSRF token of its pages."""

    def __init__(self, gateway):
        self.http = httpx.Client(base_url=gateway, follow_redirects=False, timeout=20)

    def csrf(self, path="/console/login"):
        page = self.http.get(path)
        m = re.search(r'name="_csrf" value="([a-z0-9]+)"', page.text)
        assert m, (path, page.status_code, page.text[:300])
        return m.group(1)

    def post(self, path, data, csrf=True, page="/console/login"):
        return self.http.post(path, data={**data, **({"_csrf": self.csrf(page)} if csrf else {})})

    def sign_up(self, email, project="Other app"):
        r = self.post("/console/register", {"email": email, "password": PASSWORD, "project": project}, page="/console/register")
        assert r.status_code == 303 and r.headers["location"] == "/console", (r.status_code, r.text[:300])
        return self


def test_another_user_cannot_see_or_touch_the_first_users_project(cp):
    a = Session(cp.open).sign_up(f"owner-{uuid.uuid4().hex[:8]}@example.com", "Owner app")
    assert a.post("/console/endpoints", {"slug": "private", "model": MODEL, "tier": "standard"}, page="/console").status_code == 303
    created = a.post("/console/keys", {"name": "owner key", "scope": "inference"}, page="/console/keys")
    key_id = re.search(r'id="key-(key_[a-z0-9]+)"', created.text).group(1)
    project_id = re.search(r"/proj_([a-z0-9]+)/private/v1", a.http.get("/console").text).group(1)

    b = Session(cp.open).sign_up(f"other-{uuid.uuid4().hex[:8]}@example.com")
    for path in ["/console", "/console/keys", "/console/usage"]:
        page = b.http.get(path)
        assert page.status_code == 200 and project_id not in page.text and key_id not in page.text and "private" not in page.text, path
    # Acting on A's key, or switching to A's project, by URL: refused, and nothing changed.
    assert b.post(f"/console/keys/{key_id}/revoke", {}, page="/console/keys").status_code == 404
    assert b.post("/console/project", {"project": project_id}, page="/console").status_code == 404
    assert "live" in a.http.get("/console/keys").text
    # And A's project's management API with B's session cookie: not a key, refused.
    r = b.http.get("/manage/v1/keys", params={"project": project_id})
    assert r.status_code == 401


def test_a_post_without_the_csrf_token_is_refused(cp):
    s = Session(cp.open).sign_up(f"csrf-{uuid.uuid4().hex[:8]}@example.com")
    r = s.post("/console/keys", {"name": "forged", "scope": "inference"}, csrf=False)
    assert r.status_code == 403
    r = s.http.post("/console/keys", data={"name": "forged", "scope": "inference", "_csrf": "a" * 40})
    assert r.status_code == 403, "a token that is not the cookie's"
    assert "forged" not in s.http.get("/console/keys").text
    # Another site's form: the browser sends the cookies (SameSite=Lax lets top-level POSTs carry none),
    # but it cannot know the token.
    cookie = s.http.cookies.get("xero_session")
    r = httpx.post(cp.open + "/console/keys", cookies={"xero_session": cookie}, data={"name": "x"}, follow_redirects=False)
    assert r.status_code == 403


def test_login_throttling_engages_and_one_message_for_every_wrong_login(cp):
    email = f"throttle-{uuid.uuid4().hex[:8]}@example.com"
    Session(cp.open).sign_up(email)
    s = Session(cp.open)
    unknown = s.post("/console/login", {"email": f"nobody-{uuid.uuid4().hex[:6]}@example.com", "password": PASSWORD})
    wrong = s.post("/console/login", {"email": email, "password": "not-the-password"})
    assert unknown.status_code == wrong.status_code == 401
    assert "Wrong email or password." in unknown.text and "Wrong email or password." in wrong.text
    for _ in range(4):
        assert s.post("/console/login", {"email": email, "password": "still-not-it"}).status_code == 401
    # Five failures for the address: even the right password waits now.
    r = s.post("/console/login", {"email": email, "password": PASSWORD})
    assert r.status_code == 429 and "Too many failed log-ins" in r.text
    # The throttle is per email (and, at a higher bound, per address): another email from the same client still logs in.
    other = f"ok-{uuid.uuid4().hex[:8]}@example.com"
    Session(cp.open).sign_up(other)
    assert Session(cp.open).post("/console/login", {"email": other, "password": PASSWORD}).status_code == 303


def test_invite_and_closed_refuse_sign_up(cp):
    closed = Session(cp.closed)
    assert "Sign-up is closed" in closed.http.get("/console/register").text
    r = closed.post("/console/register", {"email": f"c-{uuid.uuid4().hex[:6]}@example.com", "password": PASSWORD}, page="/console/login")
    assert r.status_code == 403
    inv = Session(cp.invite)
    email = f"invited-{uuid.uuid4().hex[:6]}@example.com"
    r = inv.post("/console/register", {"email": email, "password": PASSWORD, "invite": "inv_" + "x" * 32}, page="/console/register")
    assert r.status_code == 403 and "invite code is not valid" in r.text
    code = subprocess.run([BIN, "admin", "create-invite", "--redis", cp.redis.url, "--email", email], capture_output=True, text=True,
                          timeout=30, check=True).stdout.strip()
    other = inv.post("/console/register", {"email": "someone-else@example.com", "password": PASSWORD, "invite": code}, page="/console/register")
    assert other.status_code == 403, "an invite for one address is not another's"
    r = inv.post("/console/register", {"email": email, "password": PASSWORD, "invite": code}, page="/console/register")
    assert r.status_code == 303, r.text[:300]
    again = Session(cp.invite).post("/console/register", {"email": f"x-{uuid.uuid4().hex[:6]}@example.com", "password": PASSWORD, "invite": code},
                                    page="/console/register")
    assert again.status_code == 403, "an invite is used once"


def test_quotas_refuse_the_next_endpoint(cp):
    s = Session(cp.open).sign_up(f"quota-{uuid.uuid4().hex[:8]}@example.com")
    for i in range(5):
        r = s.post("/console/endpoints", {"slug": f"ep{i}", "model": MODEL, "tier": "standard"}, page="/console")
        assert r.status_code == 303, r.text[:300]
    r = s.post("/console/endpoints", {"slug": "ep5", "model": MODEL, "tier": "standard"}, page="/console")
    assert r.status_code == 403 and "at most 5 endpoints" in r.text


def test_session_cookies_are_httponly_and_lax(cp):
    s = Session(cp.open)
    r = s.http.get("/console/login")
    csrf_cookie = [c for c in r.headers.get_list("set-cookie") if c.startswith("xero_csrf=")]
    assert csrf_cookie and "HttpOnly" in csrf_cookie[0] and "SameSite=Lax" in csrf_cookie[0] and "Secure" not in csrf_cookie[0]
    r = s.post("/console/register", {"email": f"cookie-{uuid.uuid4().hex[:8]}@example.com", "password": PASSWORD}, page="/console/register")
    session_cookie = [c for c in r.headers.get_list("set-cookie") if c.startswith("xero_session=")]
    assert session_cookie and "HttpOnly" in session_cookie[0] and "SameSite=Lax" in session_cookie[0], session_cookie


def test_users_the_admin_makes_log_in_to_the_project_they_are_given(cp):
    demo = cp.bootstrap(project=f"ops-{uuid.uuid4().hex[:6]}", endpoint="ops-chat", model=MODEL)
    email = f"made-{uuid.uuid4().hex[:8]}@example.com"
    env = {"XERO_USER_PASSWORD": PASSWORD, "PATH": "/usr/bin:/bin"}
    made = subprocess.run([BIN, "admin", "create-user", "--redis", cp.redis.url, "--email", email, "--project-slug", demo["project_slug"]],
                          capture_output=True, text=True, timeout=30, env=env)
    assert made.returncode == 0 and made.stdout.startswith("user_"), made.stderr
    weak = subprocess.run([BIN, "admin", "create-user", "--redis", cp.redis.url, "--email", "weak@example.com"],
                          capture_output=True, text=True, timeout=30, env={**env, "XERO_USER_PASSWORD": "short"})
    assert weak.returncode != 0 and "at least 10 characters" in weak.stderr
    s = Session(cp.open)
    assert s.post("/console/login", {"email": email.upper(), "password": PASSWORD}).status_code == 303, "emails compare lowercased"
    assert "ops-chat" in s.http.get("/console").text
    stored = cp.redis.cli("HGET", f"xero:user:{made.stdout.strip()}", "password_hash")
    assert re.match(r"^\$2[ab]\$11\$", stored) and PASSWORD not in stored, "only a bcrypt hash (cost 11) is stored"


def call(base_url, key):
    from openai import OpenAI
    return OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=30).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hello"}], max_tokens=4)


def new_key(s, **fields):
    page = s.post("/console/keys", {"name": "k", "scope": "inference", **fields}, page="/console/keys")
    m = re.search(r'id="new-key">(xero_[a-z0-9_-]+)<', page.text)
    assert m, page.text[:500]
    return m.group(1), page


def test_key_rotation_with_a_grace_period_and_an_ip_allow_list(cp):
    from openai import PermissionDeniedError, AuthenticationError
    s = Session(cp.open).sign_up(f"rotate-{uuid.uuid4().hex[:8]}@example.com")
    assert s.post("/console/endpoints", {"slug": "rot", "model": MODEL, "tier": "standard"}, page="/console").status_code == 303
    base_url = re.search(r'base-url">([^<]+)<', s.http.get("/console").text).group(1)
    # An allow-list without this client's address: the key is refused from here.
    fenced, page = new_key(s, allowed_ips="10.9.9.9, 192.0.2.0/24")
    assert "10.9.9.9/32, 192.0.2.0/24" in page.text
    with pytest.raises(PermissionDeniedError):
        call(base_url, fenced)
    # Changing the allow-list of that key in the browser's form lets it in, and back out.
    fenced_id = re.findall(r'id="key-(key_[a-z0-9]+)"', s.http.get("/console/keys").text)[0]
    assert s.post(f"/console/keys/{fenced_id}/allowed-ips", {"allowed_ips": "10.9.9.9, 127.0.0.1"}, page="/console/keys").status_code == 303
    assert "10.9.9.9/32, 127.0.0.1/32" in s.http.get("/console/keys").text
    call(base_url, fenced)
    assert s.post(f"/console/keys/{fenced_id}/allowed-ips", {"allowed_ips": "not-an-address"}, page="/console/keys").status_code == 400
    assert s.post(f"/console/keys/{fenced_id}/allowed-ips", {"allowed_ips": "10.9.9.9"}, page="/console/keys").status_code == 303
    with pytest.raises(PermissionDeniedError):
        call(base_url, fenced)
    # Rotation with an hour's grace: both keys work; rotating again with none ends the previous one.
    old, _ = new_key(s)
    key_id = re.findall(r'id="key-(key_[a-z0-9]+)"', s.http.get("/console/keys").text)[0]
    rotated = s.post(f"/console/keys/{key_id}/rotate", {"grace_seconds": "3600"}, page="/console/keys")
    second = re.search(r'id="new-key">(xero_[a-z0-9_-]+)<', rotated.text).group(1)
    assert second != old
    call(base_url, old)
    call(base_url, second)
    second_id = re.findall(r'id="key-(key_[a-z0-9]+)"', s.http.get("/console/keys").text)[0]
    s.post(f"/console/keys/{second_id}/rotate", {"grace_seconds": "0"}, page="/console/keys")
    time.sleep(2.5)   # the gateways' key cache
    with pytest.raises(AuthenticationError):
        call(base_url, second)
    call(base_url, old)   # still inside its own hour


def test_join_keys_and_the_agents_they_bring(cp):
    s = Session(cp.open).sign_up(f"agents-{uuid.uuid4().hex[:8]}@example.com")
    page = s.post("/console/join-keys", {"name": "office"}, page="/console/agents")
    join_key = re.search(r'id="new-join-key">([^<]+)<', page.text).group(1)
    assert "no-agents" in page.text
    name = f"agent-{uuid.uuid4().hex[:6]}"
    cp.start_worker(name, "--models", MODEL, "--sim-tpot-ms", "1", join_key=join_key)
    wait_for(lambda: f'id="agent-{name}"' in s.http.get("/console/agents").text, what="the agent on its project's page")
    other = Session(cp.open).sign_up(f"nosy-{uuid.uuid4().hex[:8]}@example.com")
    assert name not in other.http.get("/console/agents").text, "another project does not see it"
    jk_id = re.search(r'id="jk-([a-z0-9_]+)"', s.http.get("/console/agents").text).group(1)
    assert other.post(f"/console/join-keys/{jk_id}/revoke", {}, page="/console/agents").status_code == 404
    assert s.post(f"/console/join-keys/{jk_id}/revoke", {}, page="/console/agents").status_code == 303
    wait_for(lambda: f'id="agent-{name}"' not in s.http.get("/console/agents").text, what="the revoked agent gone")
    cp.stop(name)


def test_the_admin_ops_page_shows_a_queued_job(cp):
    import threading
    slow = cp.bootstrap(project=f"slow-{uuid.uuid4().hex[:6]}", endpoint="slow", model="slow-model")
    cp.start_worker("console-slow", "--models", "slow-model", "--slots", "1", "--sim-tpot-ms", "300")
    email = f"admin-{uuid.uuid4().hex[:8]}@example.com"
    subprocess.run([BIN, "admin", "create-user", "--redis", cp.redis.url, "--email", email, "--admin", "--project-slug", slow["project_slug"]],
                   check=True, capture_output=True, timeout=30, env={"XERO_USER_PASSWORD": PASSWORD, "PATH": "/usr/bin:/bin"})
    admin = Session(cp.open)
    assert admin.post("/console/login", {"email": email, "password": PASSWORD}).status_code == 303
    plain = Session(cp.open).sign_up(f"plain-{uuid.uuid4().hex[:8]}@example.com")
    assert plain.http.get("/console/admin/ops").status_code == 404, "only admins"
    from openai import OpenAI
    client = OpenAI(base_url=cp.open + slow["base_path"], api_key=slow["api_key"], max_retries=0, timeout=30)

    def ask():
        try:
            client.chat.completions.create(model="slow-model", messages=[{"role": "user", "content": "hi"}], max_tokens=10)
        except Exception:
            pass   # the queued one may time out in the queue (2 s): what matters is the page while it waits
    first = threading.Thread(target=ask)
    first.start()
    wait_for(lambda: re.search(r"<td>standard</td><td>(dispatched|running)</td>", admin.http.get("/console/admin/ops").text),
             what="the first job running")
    second = threading.Thread(target=ask)
    second.start()
    seen = []
    wait_for(lambda: seen.append(admin.http.get("/console/admin/ops").text) or re.search(r'<tr class="job"[^>]*><td><code>[^<]+</code></td><td>standard</td><td>queued</td>', seen[-1]),
             timeout=2, what="a queued job on the ops page")
    assert 'http-equiv="refresh"' in seen[-1]
    assert "console-slow" in seen[-1]
    # And in the browser, for the screenshot.
    d = chromium_driver()
    try:
        d.get(cp.open + "/console/login")
        d.find_element("id", "email").send_keys(email)
        d.find_element("id", "password").send_keys(PASSWORD)
        d.find_element("id", "login").click()
        wait_for(lambda: d.current_url.endswith("/console"), what="the admin's dashboard")
        d.get(cp.open + "/console/admin/ops")
        assert d.find_elements("css selector", "tr.worker")
        shot(cp, d, "admin-ops")
    finally:
        d.quit()
    first.join()
    second.join()
    cp.stop("console-slow")


def test_a_bad_signup_policy_stops_the_gateway_with_the_reason(cp):
    r = subprocess.run([BIN, "gateway", "--config", str(cp.config), "--redis", cp.redis.url, "--signup", "sometimes", "--print-routes"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "--signup must be open, invite or closed" in r.stderr, r.stderr


def test_the_storage_quota_refuses_the_next_upload(cp):
    """A self-service project's Files hold at most console.max_storage_mb (1 MiB here)."""
    import io
    from openai import OpenAI, PermissionDeniedError
    s = Session(cp.open).sign_up(f"files-{uuid.uuid4().hex[:8]}@example.com")
    assert s.post("/console/endpoints", {"slug": "files", "model": MODEL, "tier": "standard"}, page="/console").status_code == 303
    base_url = re.search(r'base-url">([^<]+)<', s.http.get("/console").text).group(1)
    key, _ = new_key(s)
    c = OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=30)
    line = ('{"custom_id": "%s", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m", "messages": [{"role": "user", "content": "%s"}]}}\n')
    def jsonl(n, tag):
        return "".join(line % (f"{tag}-{i}", "x" * 900) for i in range(n)).encode()
    first = c.files.create(file=("a.jsonl", io.BytesIO(jsonl(600, "a"))), purpose="batch")      # ~0.6 MiB
    with pytest.raises(PermissionDeniedError) as e:
        c.files.create(file=("b.jsonl", io.BytesIO(jsonl(600, "b"))), purpose="batch")
    assert e.value.body["code"] == "quota_exceeded" and "1 MiB" in e.value.message
    assert [f.id for f in c.files.list().data] == [first.id], "the refused upload is not stored"
    c.files.delete(first.id)
    assert c.files.create(file=("b.jsonl", io.BytesIO(jsonl(600, "b"))), purpose="batch").bytes > 500_000
