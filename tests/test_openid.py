"""The openid plugin against a real OpenID Connect provider (tests/oidc, oidc-provider on Node).

The provider has one user (log in as "alice") and two clients: "kintofs"
(tokens valid an hour) and "kintofs-short" (2 seconds). kintofs names them
"local" and "short", both on the same issuer; ``http_host`` is fixed, so that
the provider knows in advance where to send the browser back.
"""

import base64
import json
import os
import re
import shutil
import subprocess
import time
from urllib.parse import parse_qs, unquote, urljoin, urlsplit

import pytest
import requests
from conftest import (
    ALICE,
    BOB,
    Api,
    InProcessServer,
    assert_error,
    assert_status,
    basicauth_id,
    free_port,
    make_server,
)

from kintofs.config import ConfigError, load_settings

OIDC_DIR = os.path.join(os.path.dirname(__file__), "oidc")
HOST = "kintofs.test"
CALLBACK = "http://localhost:3000/#tokens="
USER = {"sub": "alice", "email": "alice@example.test", "email_verified": True}


class Provider:
    def __init__(self, log_dir):
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.log_path = os.path.join(log_dir, "oidc-provider.log")
        redirect_uris = " ".join(
            f"http://{HOST}/v1/openid/{name}/token" for name in ("local", "short")
        )
        env = {**os.environ, "OIDC_PORT": str(self.port), "OIDC_REDIRECT_URIS": redirect_uris}
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                ["node", "provider.js"], cwd=OIDC_DIR, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 30
        while "listening" not in self.log():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the OpenID provider did not start: {self.log()}")
            time.sleep(0.05)

    def log(self):
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def userinfo_calls(self):
        """The statuses of the userinfo requests the provider has answered."""
        lines = self.log().splitlines()
        return [json.loads(line)["userinfo"] for line in lines if line.startswith('{"userinfo"')]

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@pytest.fixture(scope="module")
def provider(tmp_path_factory):
    if shutil.which("node") is None:
        pytest.skip("node is not installed: the OpenID provider (tests/oidc) runs on Node.js")
    if not os.path.isdir(os.path.join(OIDC_DIR, "node_modules", "oidc-provider")):
        if shutil.which("npm") is None:
            pytest.skip("npm is not installed: cannot install tests/oidc's oidc-provider")
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=OIDC_DIR, check=True)
    running = Provider(str(tmp_path_factory.mktemp("oidc")))
    yield running
    running.stop()


def provider_settings(provider, **short):
    """The two provider tables, as JSON; ``short`` adds fields to the second."""

    def table(name, client_id, **more):
        return {
            "name": name,
            "issuer": provider.issuer,
            "client_id": client_id,
            "client_secret": f"{client_id}-secret",  # as tests/oidc/provider.js registers it
            **more,
        }

    return json.dumps([table("local", "kintofs"), table("short", "kintofs-short", **short)])


def openid_server(data_dir, provider, policies="local short basicauth", **short):
    return make_server(
        data_dir,
        plugins="flush openid",
        auth_policies=policies,
        openid_providers=provider_settings(provider, **short),
        http_host=HOST,
    )


@pytest.fixture(scope="module")
def server(provider, tmp_path_factory):
    app = openid_server(tmp_path_factory.mktemp("openid") / "data", provider)
    yield app
    app.stop()


@pytest.fixture
def api(server):
    response = Api(server, auth=None).post("/__flush__")
    assert response.status_code == 202, response.text
    return Api(server, auth=None)


def bearer(tokens):
    return {"Authorization": f"{tokens['token_type']} {tokens['access_token']}"}


def form_of(page, page_url):
    """The action and hidden fields of the (only) form of a provider page."""
    action = re.search(r'<form[^>]*action="([^"]+)"', page).group(1)
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page))
    return urljoin(page_url, action), fields


def through_provider(authorize_url, abort=False):
    """Follow the provider's pages as a browser would: log in as alice and
    consent (or abort); the URL where it sends the browser back to kintofs."""
    browser = requests.Session()
    url = authorize_url
    for _ in range(20):
        if urlsplit(url).hostname == HOST:
            return url
        response = browser.get(url, allow_redirects=False, timeout=30)
        if response.is_redirect:
            url = urljoin(url, response.headers["Location"])
            continue
        assert_status(response, 200)
        if abort:
            url = urljoin(url, urlsplit(url).path + "/abort")
            continue
        action, fields = form_of(response.text, url)
        if fields["prompt"] == "login":
            fields.update(login="alice", password="any password")
        response = browser.post(action, data=fields, allow_redirects=False, timeout=30)
        assert response.is_redirect, response.text
        url = urljoin(action, response.headers["Location"])
    raise AssertionError("the provider never sent the browser back")


def on_kintofs(api, url):
    """``url`` (on ``HOST``, where the provider sends browsers) on the server under test."""
    parts = urlsplit(url)
    return f"{api.daemon.root_url}{parts.path}?{parts.query}"


def start_login(api, provider_name="local", scope="openid email"):
    response = api.get(
        f"/openid/{provider_name}/login", params={"callback": CALLBACK, "scope": scope}
    )
    assert_status(response, 307)
    return response.headers["Location"]


def log_in(api, provider_name="local", scope="openid email"):
    """The provider's token answer, as the callback gets it."""
    back = on_kintofs(api, through_provider(start_login(api, provider_name, scope)))
    response = api.get(back)
    assert_status(response, 307)
    location = response.headers["Location"]
    assert location.startswith(CALLBACK)
    return json.loads(base64.b64decode(unquote(location[len(CALLBACK) :])))


def test_capability_lists_the_providers(api, provider):
    capability = api.get("/").json()["capabilities"]["openid"]
    described = {
        "issuer": provider.issuer,
        "audience": "",
        "header_type": "Bearer",
        "userinfo_endpoint": provider.issuer + "/me",
    }
    assert capability == {
        "description": "OpenID connect support.",
        "url": "http://kinto.readthedocs.io/en/stable/api/1.x/authentication.html",
        "providers": [
            {
                "name": "local",
                "auth_path": "/openid/local/login",
                "client_id": "kintofs",
                **described,
            },
            {
                "name": "short",
                "auth_path": "/openid/short/login",
                "client_id": "kintofs-short",
                **described,
            },
        ],
    }


def test_login_redirects_to_the_provider_with_a_fresh_state(api, provider):
    first, second = start_login(api), start_login(api)
    parts = urlsplit(first)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == provider.issuer + "/auth"
    query = parse_qs(parts.query)
    assert {key: value for key, value in query.items() if key != "state"} == {
        "client_id": ["kintofs"],
        "response_type": ["code"],
        "scope": ["openid email"],
        "redirect_uri": [f"http://{HOST}/v1/openid/local/token"],
    }
    assert re.fullmatch(r"[0-9a-f]{64}", query["state"][0])
    assert parse_qs(urlsplit(second).query)["state"] != query["state"]
    # The provider takes the request: it shows its login page.
    response = requests.get(first, timeout=30)
    assert_status(response, 200)
    assert 'name="login"' in response.text


def test_a_login_ends_on_the_callback_with_a_working_token(api):
    tokens = log_in(api)
    assert tokens["token_type"] == "Bearer"
    assert tokens["expires_in"] == 3600
    assert {"access_token", "id_token", "scope"} <= set(tokens)
    hello = api.get("/", headers=bearer(tokens)).json()
    assert hello["user"]["id"] == "local:alice"
    assert hello["user"]["profile"] == USER
    assert {"local:alice", "system.Authenticated"} <= set(hello["user"]["principals"])


def test_other_users_have_an_empty_profile(api):
    assert api.get("/", auth=ALICE).json()["user"]["profile"] == {}


def test_a_state_serves_once(api):
    back = on_kintofs(api, through_provider(start_login(api)))
    assert_status(api.get(back), 307)
    body = assert_error(api.get(back), 400, 107, "Invalid state")
    assert body["details"] == [
        {"location": "body", "name": "state", "description": "Invalid state", "errno": 105}
    ]


def test_a_refusal_at_the_provider_goes_back_to_the_callback(api):
    back = on_kintofs(api, through_provider(start_login(api), abort=True))
    response = api.get(back)
    assert_status(response, 307)
    assert response.headers["Location"] == (
        CALLBACK + "error=access_denied&error_description=End-User+aborted+interaction"
    )


@pytest.mark.parametrize(
    "query, details",
    [
        (
            "",
            [
                {"location": "querystring", "name": "callback", "description": "Required"},
                {"location": "querystring", "name": "scope", "description": "Required"},
            ],
        ),
        (
            "?callback=notaurl&scope=openid",
            [{"location": "querystring", "name": "callback", "description": "Must be a URL"}],
        ),
        (
            "?callback=https://evil.example/&scope=openid",
            [{"location": "body", "name": "callback", "description": "Untrusted callback URL"}],
        ),
        (
            "?callback=http://localhost:3000/&scope=openid+offline_access",
            [
                {
                    "location": "body",
                    "name": "scope",
                    "description": "Scopes not allowed: offline_access",
                }
            ],
        ),
        (
            "?callback=http://localhost:3000/&scope=openid&prompt=login",
            [
                {
                    "location": "querystring",
                    "name": "prompt",
                    "description": "String does not match expected pattern",
                }
            ],
        ),
    ],
)
def test_login_refuses_what_kinto_refuses(api, query, details):
    body = assert_error(api.get("/openid/local/login" + query), 400, 107)
    assert body["details"] == details


def test_unknown_providers_and_bad_token_queries(api):
    body = assert_error(
        api.get("/openid/nope/login?callback=http://localhost:3000/&scope=openid"),
        400,
        107,
        "Unknown provider 'nope'",
    )
    assert body["details"] == [
        {"location": "path", "name": "provider", "description": "Unknown provider 'nope'"}
    ]
    assert_error(api.get("/openid/local/token?code=c"), 400, 107, "state in querystring: Required")
    assert_error(
        api.get("/openid/local/token?state=s"),
        400,
        107,
        "Provide either 'state' and 'code', or 'error' and 'error_description', but not both.",
    )
    assert_error(api.post("/openid/local/login"), 405, 115)
    preflight = {"Origin": "http://a.example", "Access-Control-Request-Method": "GET"}
    response = api.request("OPTIONS", "/openid/local/token", headers=preflight)
    assert (
        assert_status(response, 200).headers["Access-Control-Allow-Methods"] == "GET,HEAD,OPTIONS"
    )


def test_an_invalid_token_is_anonymous_and_gets_401(api, provider):
    calls = len(provider.userinfo_calls())
    headers = {"Authorization": "Bearer not-a-token"}
    assert "user" not in api.get("/", headers=headers).json()
    response = api.put("/buckets/b", headers=headers)
    assert_error(response, 401, 104, "Please authenticate yourself to use this endpoint.")
    # One challenge per policy, in the order of auth_policies, as Kinto sends.
    assert response.raw.headers.getlist("WWW-Authenticate") == [
        'Bearer realm="Realm"',
        'Bearer realm="Realm"',
        'Basic realm="Realm"',
    ]
    # Each policy asked the provider, and nothing was remembered.
    assert provider.userinfo_calls()[calls:] == [401] * 4


def test_an_expired_token_gets_401(api, provider):
    tokens = log_in(api, "short")
    assert tokens["expires_in"] == 2
    deadline = time.monotonic() + 30
    while requests.get(provider.issuer + "/me", headers=bearer(tokens), timeout=30).ok:
        assert time.monotonic() < deadline, "the short-lived token never expired"
        time.sleep(0.2)
    assert_error(api.put("/buckets/b", headers=bearer(tokens)), 401, 104)


def test_a_verified_token_is_remembered(api, provider):
    tokens = log_in(api)
    calls = len(provider.userinfo_calls())
    for _ in range(3):
        assert api.get("/", headers=bearer(tokens)).json()["user"]["id"] == "local:alice"
    assert provider.userinfo_calls()[calls:] == [200]
    other = log_in(api)
    assert api.get("/", headers=bearer(other)).json()["user"]["id"] == "local:alice"
    assert provider.userinfo_calls()[calls:] == [200, 200]


def test_the_principal_works_in_permissions_and_groups(api):
    owner = api.as_user(ALICE)
    tokens = log_in(api)
    assert_status(
        owner.put("/buckets/private", json={"permissions": {"read": ["local:alice"]}}), 201
    )
    assert_status(api.get("/buckets/private", headers=bearer(tokens)), 200)
    assert_error(api.as_user(BOB).get("/buckets/private"), 403, 121)
    assert_error(api.get("/buckets/private"), 401, 104)

    assert_status(owner.put("/buckets/team"), 201)
    assert_status(
        owner.put("/buckets/team/groups/editors", json={"data": {"members": ["local:alice"]}}), 201
    )
    writers = {"write": ["/buckets/team/groups/editors"]}
    assert_status(owner.put("/buckets/team/collections/notes", json={"permissions": writers}), 201)
    created = api.post(
        "/buckets/team/collections/notes/records", headers=bearer(tokens), json={"data": {"a": 1}}
    )
    assert_status(created, 201)
    assert "local:alice" in created.json()["permissions"]["write"]
    hello = api.get("/", headers=bearer(tokens)).json()
    assert "/buckets/team/groups/editors" in hello["user"]["principals"]
    assert basicauth_id(ALICE) not in hello["user"]["principals"]


def test_userid_field_email(provider, tmp_path):
    app = openid_server(tmp_path / "data", provider, policies="short", userid_field="email")
    try:
        api = Api(app, auth=None)
        assert_error(
            api.get("/openid/short/login", params={"callback": CALLBACK, "scope": "openid"}),
            400,
            107,
            "Provider short requires 'email' scope",
        )
        tokens = log_in(api, "short")
        assert (
            api.get("/", headers=bearer(tokens)).json()["user"]["id"] == "short:alice@example.test"
        )
    finally:
        app.stop()


def test_an_unreachable_provider_gives_503(tmp_path):
    gone = f"http://127.0.0.1:{free_port()}"
    providers = [{"name": "gone", "issuer": gone, "client_id": "x"}]
    app = make_server(
        tmp_path / "data",
        plugins="openid",
        auth_policies="gone",
        openid_providers=json.dumps(providers),
    )
    try:
        api = Api(app, auth=None)
        bearer_header = {"Authorization": "Bearer some-token"}
        unavailable = assert_error(api.get("/", headers=bearer_header), 503, 201)
        assert (
            unavailable["message"]
            == "The OpenID provider 'gone' is unavailable, please retry later."
        )
        assert "Retry-After" in api.get("/", headers=bearer_header).headers
        assert_error(
            api.get("/openid/gone/login", params={"callback": CALLBACK, "scope": "openid"}),
            503,
            201,
        )
        # The hello view itself still answers, with what the settings tell.
        hello = api.get("/").json()
        assert hello["capabilities"]["openid"]["providers"][0]["issuer"] == gone
    finally:
        app.stop()


def refusal(tmp_path, providers, **settings):
    """The ConfigError message of a server with these provider tables."""
    settings = {"plugins": "openid", "auth_policies": providers[0]["name"], **settings}
    with pytest.raises(ConfigError) as refused:
        InProcessServer(tmp_path / "data", openid_providers=json.dumps(providers), **settings)
    return str(refused.value)


GOOD = {"name": "p", "issuer": "http://id.example", "client_id": "c"}


def test_providers_need_the_plugin_and_a_known_name(tmp_path):
    assert refusal(tmp_path, [GOOD], plugins="", auth_policies="basicauth") == (
        "openid_providers (from environment variable KINTOFS_OPENID_PROVIDERS): "
        'needs the "openid" plugin: add it to plugins'
    )
    assert refusal(tmp_path, [GOOD], auth_policies="q").startswith(
        "auth_policies (from environment variable KINTOFS_AUTH_POLICIES): "
        "unknown 'q' (known: account, basicauth, p)"
    )


@pytest.mark.parametrize(
    "changes, problem",
    [
        ({"state_length": "32"}, "state_length: expected an integer, got str"),
        ({"allowed_scopes": "openid"}, "allowed_scopes: expected an array of strings, got str"),
        ({"client_id": None}, "client_id is missing"),
        ({"audience": "a"}, "unknown field 'audience'"),
        ({"name": "P!"}, "name must be lower-case letters, digits, - or _, got 'P!'"),
        ({"name": "account"}, "name 'account' is the name of another auth policy"),
        ({"issuer": "id.example"}, "issuer must be an http:// or https:// URL, got 'id.example'"),
        ({"header_type": "Bearer x"}, "header_type must be one word, such as Bearer"),
        ({"state_length": 4}, "state_length must be >= 16, got 4"),
        ({"trusted_callback_urls": ["ftp://x/*"]}, "trusted_callback_urls: 'ftp://x/*': "),
    ],
)
def test_bad_provider_tables_are_refused(tmp_path, changes, problem):
    table = {key: value for key, value in {**GOOD, **changes}.items() if value is not None}
    assert f"openid_providers[0]: {problem}" in refusal(tmp_path, [table])


def test_two_providers_of_one_name_are_refused(tmp_path):
    message = refusal(tmp_path, [GOOD, GOOD])
    assert message == "openid_providers[1]: another provider is already named 'p'"


def test_providers_from_the_config_file(tmp_path):
    config = tmp_path / "kintofs.toml"
    config.write_text(
        'plugins = ["openid"]\n'
        'auth_policies = ["google"]\n'
        "\n"
        "[[openid_providers]]\n"
        'name = "google"\n'
        'issuer = "https://accounts.google.com"\n'
        'client_id = "c"\n'
        "state_length = 64\n"
        'allowed_scopes = ["openid"]\n'
    )
    settings = load_settings(config, environ={})
    assert settings["openid_providers"] == [
        {
            "name": "google",
            "issuer": "https://accounts.google.com",
            "client_id": "c",
            "client_secret": None,
            "header_type": None,
            "userid_field": None,
            "verification_ttl_seconds": None,
            "state_ttl_seconds": None,
            "state_length": 64,
            "allowed_scopes": ["openid"],
            "trusted_callback_urls": None,
        }
    ]
