"""A real Synapse homeserver (and, for it, a real PostgreSQL server) for the oracle tests.

Synapse is AGPL: it runs here as a separate process that the tests talk to over HTTP,
never imported by roomstate.  :class:`Homeserver` writes a config (SQLite or
PostgreSQL; a shared registration secret; rate limits raised; low bcrypt rounds;
metrics, presence and federation off; a free port on 127.0.0.1), starts
``python -m synapse.app.homeserver``, registers users with the shared-secret admin API
and lets them act through the client-server API (stdlib ``http.client``, one
connection per thread).  :class:`Postgres` runs ``initdb`` and ``pg_ctl`` in a
temporary directory, listening on 127.0.0.1 only.
"""
from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

SERVER_NAME = "test.local"
SECRET = "roomstate-test-registration-secret"
START_TIMEOUT = 180.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float, log: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode}; log:\n{_tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"server did not listen on {port} within {timeout:.0f} s; log:\n{_tail(log)}")


def _tail(path: str, lines: int = 40) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return "(no log)"


# -- PostgreSQL ------------------------------------------------------------------------


def postgres_available() -> Optional[str]:
    """None when initdb and pg_ctl are on PATH, otherwise why not."""
    for tool in ("initdb", "pg_ctl"):
        if shutil.which(tool) is None:
            return f"{tool} is not on PATH"
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run PostgreSQL as"
    return None


class Postgres:
    """A PostgreSQL cluster of its own in a temporary directory, on 127.0.0.1."""

    def __init__(self) -> None:
        # Not under pytest's tmp_path: when the tests run as root, PostgreSQL runs as the
        # 'postgres' user, who must reach the directory.
        self.dir = tempfile.mkdtemp(prefix="roomstate-pg-")
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "postgres.log")
        self.port = free_port()
        self.user = "roomstate"
        self._as: List[str] = []
        if os.geteuid() == 0:
            import pwd

            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]

    def _run(self, *argv: str) -> None:
        subprocess.run([*self._as, *argv], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def start(self) -> "Postgres":
        # C collation and UTF-8: what Synapse requires of its database.
        self._run("initdb", "-D", self.data, "-U", self.user, "--auth=trust", "--encoding=UTF8", "--locale=C")
        options = f"-c listen_addresses=127.0.0.1 -c port={self.port} -k {self.dir} -c fsync=off -c full_page_writes=off"
        self._run("pg_ctl", "-D", self.data, "-l", self.log, "-o", options, "-w", "-t", "60", "start")
        return self

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" ENCODING \'UTF8\' LC_COLLATE \'C\' LC_CTYPE \'C\' TEMPLATE template0')
        return self.url(name)

    def url(self, database: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop")
        except (subprocess.CalledProcessError, OSError):
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


# -- Synapse ---------------------------------------------------------------------------


class MatrixError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


_RATE = {"per_second": 100000, "burst_count": 100000}


def _config(dir: str, port: int, database: Dict[str, Any]) -> Dict[str, Any]:
    return {
        "server_name": SERVER_NAME,
        "pid_file": os.path.join(dir, "homeserver.pid"),
        "listeners": [{"port": port, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": False,
                       "x_forwarded": False, "resources": [{"names": ["client"], "compress": False}]}],
        "database": database,
        "log_config": os.path.join(dir, "log.yaml"),
        "media_store_path": os.path.join(dir, "media"),
        "signing_key_path": os.path.join(dir, "signing.key"),
        "registration_shared_secret": SECRET,
        "macaroon_secret_key": "roomstate-test-macaroon",
        "form_secret": "roomstate-test-form",
        "report_stats": False,
        "enable_metrics": False,
        "presence": {"enabled": False},
        "federation_domain_whitelist": [],  # federation off: no server is trusted
        "trusted_key_servers": [],
        "suppress_key_server_warning": True,
        "bcrypt_rounds": 4,
        "url_preview_enabled": False,
        "enable_room_list_search": False,
        "user_directory": {"enabled": False},
        "rc_message": _RATE,
        "rc_registration": _RATE,
        "rc_login": {"address": _RATE, "account": _RATE, "failed_attempts": _RATE},
        "rc_joins": {"local": _RATE, "remote": _RATE},
        "rc_joins_per_room": _RATE,
        "rc_invites": {"per_room": _RATE, "per_user": _RATE, "per_issuer": _RATE},
        "rc_admin_redaction": _RATE,
        "rc_room_creation": _RATE,
        "rc_3pid_validation": _RATE,
        "rc_presence": {"per_user": _RATE},
        "rc_delayed_event_mgmt": _RATE,
    }


_LOG_CONFIG = """\
version: 1
formatters:
  precise:
    format: '%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(message)s'
handlers:
  file:
    class: logging.FileHandler
    formatter: precise
    filename: {log}
root:
  level: WARNING
  handlers: [file]
disable_existing_loggers: false
"""


class Homeserver:
    """A Synapse process with its own config, database and port."""

    def __init__(self, dir: str, *, postgres_url: Optional[str] = None) -> None:
        self.dir = dir
        os.makedirs(dir, exist_ok=True)
        self.port = free_port()
        self.log = os.path.join(dir, "homeserver.log")
        if postgres_url is None:
            self.db_path: Optional[str] = os.path.join(dir, "homeserver.db")
            database: Dict[str, Any] = {"name": "sqlite3", "args": {"database": self.db_path}}
            self.source = self.db_path
        else:
            self.db_path = None
            u = urllib.parse.urlsplit(postgres_url)
            database = {"name": "psycopg2", "args": {
                "user": u.username, "host": u.hostname, "port": u.port, "dbname": u.path.lstrip("/"),
                "cp_min": 1, "cp_max": 8}}
            self.source = postgres_url
        self.config_path = os.path.join(dir, "homeserver.yaml")
        with open(self.config_path, "w") as f:
            json.dump(_config(dir, self.port, database), f, indent=1)  # JSON is YAML
        with open(os.path.join(dir, "log.yaml"), "w") as f:
            f.write(_LOG_CONFIG.format(log=json.dumps(self.log)))
        self.proc: Optional[subprocess.Popen] = None
        self._local = threading.local()
        self._conns: List[http.client.HTTPConnection] = []  # every thread's, closed by stop()
        self._stdout: Any = None

    def start(self) -> "Homeserver":
        subprocess.run([sys.executable, "-m", "synapse.app.homeserver", "-c", self.config_path, "--generate-keys"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=self.dir)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env["PYTHONWARNINGS"] = "ignore"
        self._stdout = open(os.path.join(self.dir, "stdout.log"), "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "synapse.app.homeserver", "-c", self.config_path],
            cwd=self.dir, env=env, stdout=self._stdout, stderr=subprocess.STDOUT,
        )
        _wait_for_port(self.port, self.proc, START_TIMEOUT, self.log)
        deadline = time.monotonic() + START_TIMEOUT
        while True:  # the port opens a little before the client API answers
            try:
                self.request("GET", "/_matrix/client/versions")
                return self
            except (OSError, MatrixError, http.client.HTTPException):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def stop(self) -> None:
        for conn in self._conns:
            conn.close()
        self._conns.clear()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if self._stdout is not None:
            self._stdout.close()
            self._stdout = None

    # -- HTTP ------------------------------------------------------------------------
    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            self._conns.append(conn)
        return conn

    def request(self, method: str, path: str, body: Any = None, token: Optional[str] = None) -> Any:
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        data = None if body is None else json.dumps(body).encode()
        for attempt in range(3):
            conn = self._conn()
            try:
                conn.request(method, path, body=data, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
                break
            except (http.client.HTTPException, ConnectionError):
                conn.close()
                self._local.conn = None
                if attempt == 2:
                    raise
        reply = json.loads(raw) if raw else {}
        if resp.status >= 400:
            raise MatrixError(resp.status, reply)
        return reply

    # -- the client-server API --------------------------------------------------------
    def register(self, localpart: str, *, admin: bool = False) -> "User":
        """A user, registered with the shared-secret admin API (HMAC-SHA1 over the nonce and fields)."""
        nonce = self.request("GET", "/_synapse/admin/v1/register")["nonce"]
        password = f"pw-{localpart}"
        mac = hmac.new(SECRET.encode(), digestmod=hashlib.sha1)
        mac.update(b"\x00".join([nonce.encode(), localpart.encode(), password.encode(),
                                 b"admin" if admin else b"notadmin"]))
        reply = self.request("POST", "/_synapse/admin/v1/register", {
            "nonce": nonce, "username": localpart, "password": password, "admin": admin, "mac": mac.hexdigest()})
        return User(self, reply["user_id"], reply["access_token"])


class User:
    def __init__(self, hs: Homeserver, user_id: str, token: str) -> None:
        self.hs = hs
        self.user_id = user_id
        self.token = token
        self._txn = 0

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        return self.hs.request(method, "/_matrix/client/v3" + path, body, self.token)

    @staticmethod
    def _q(value: str) -> str:
        return urllib.parse.quote(value, safe="")

    def create_room(self, **body: Any) -> str:
        return self._call("POST", "/createRoom", body)["room_id"]

    def join(self, room: str) -> str:
        return self._call("POST", f"/rooms/{self._q(room)}/join", {})["room_id"]

    def leave(self, room: str) -> None:
        self._call("POST", f"/rooms/{self._q(room)}/leave", {})

    def invite(self, room: str, user_id: str) -> None:
        self._call("POST", f"/rooms/{self._q(room)}/invite", {"user_id": user_id})

    def kick(self, room: str, user_id: str) -> None:
        self._call("POST", f"/rooms/{self._q(room)}/kick", {"user_id": user_id, "reason": "test"})

    def ban(self, room: str, user_id: str) -> None:
        self._call("POST", f"/rooms/{self._q(room)}/ban", {"user_id": user_id, "reason": "test"})

    def unban(self, room: str, user_id: str) -> None:
        self._call("POST", f"/rooms/{self._q(room)}/unban", {"user_id": user_id})

    def send(self, room: str, body: str) -> str:
        self._txn += 1
        path = f"/rooms/{self._q(room)}/send/m.room.message/{self._txn}-{time.monotonic_ns()}"
        return self._call("PUT", path, {"msgtype": "m.text", "body": body})["event_id"]

    def set_state(self, room: str, type: str, state_key: str, content: Dict[str, Any]) -> str:
        path = f"/rooms/{self._q(room)}/state/{self._q(type)}/{self._q(state_key)}"
        return self._call("PUT", path, content)["event_id"]

    def get_state(self, room: str, type: str, state_key: str = "") -> Dict[str, Any]:
        return self._call("GET", f"/rooms/{self._q(room)}/state/{self._q(type)}/{self._q(state_key)}")


# -- what the users do ------------------------------------------------------------------

Action = Callable[[], Any]


class Activity:
    """Users acting in one room, either one at a time or all at once.

    Each user has its own seeded script of actions (messages, topics, custom state,
    leaving and rejoining); the room's admin also changes power levels, kicks, bans and
    unbans.  Actions the server refuses (a kicked user sending, say) are counted, not
    fatal: concurrent users race each other as real ones do.
    """

    def __init__(self, admin: User, users: Sequence[User], room: str, *, seed: int) -> None:
        self.admin = admin
        self.users = list(users)
        self.room = room
        self.seed = seed
        self.refused = 0
        self.done = 0
        self._lock = threading.Lock()

    def _user_script(self, user: User, rng: random.Random, steps: int) -> List[Action]:
        room = self.room
        script: List[Action] = [lambda: user.join(room)]
        for i in range(steps):
            if i % 8 == 7:  # back in after a kick or a ban, if there was one
                script.append(lambda: user.join(room))
            r = rng.random()
            if r < 0.55:
                script.append(lambda i=i: user.send(room, f"{user.user_id} says {i}"))
            elif r < 0.70:
                script.append(lambda i=i: user.set_state(room, "org.example.status", user.user_id, {"n": i}))
            elif r < 0.78:
                script.append(lambda i=i: user.set_state(room, "org.example.shared", f"slot{rng.randrange(3)}",
                                                         {"by": user.user_id, "n": i}))
            elif r < 0.86:
                script.append(lambda i=i: user.set_state(room, "m.room.topic", "", {"topic": f"{user.user_id} {i}"}))
            elif r < 0.93:
                script.append(lambda: user.leave(room))
                script.append(lambda: user.join(room))
            else:
                script.append(lambda i=i: user.set_state(room, "m.room.member", user.user_id,
                                                         {"membership": "join", "displayname": f"u{i}"}))
        return script

    def _admin_script(self, rng: random.Random, steps: int) -> List[Action]:
        room, admin = self.room, self.admin
        script: List[Action] = []
        for i in range(steps):
            target = rng.choice(self.users).user_id
            r = rng.random()
            if r < 0.3:
                script.append(lambda i=i: self._power(rng, i))
            elif r < 0.5:
                script.append(lambda t=target: admin.kick(room, t))
            elif r < 0.65:
                script.append(lambda t=target: admin.ban(room, t))
                script.append(lambda t=target: admin.unban(room, t))
            elif r < 0.8:
                script.append(lambda i=i: admin.set_state(room, "m.room.name", "", {"name": f"room {i}"}))
            else:
                script.append(lambda i=i: admin.send(room, f"admin says {i}"))
        return script

    def _power(self, rng: random.Random, i: int) -> None:
        content = self.admin.get_state(self.room, "m.room.power_levels")
        users = dict(content.get("users", {}))
        users[rng.choice(self.users).user_id] = rng.choice([0, 10, 50])
        content["users"] = users
        content["events"] = dict(content.get("events", {}), **{"org.example.shared": rng.choice([0, 10])})
        self.admin.set_state(self.room, "m.room.power_levels", "", content)

    def _run(self, action: Action) -> None:
        try:
            action()
            ok = True
        except MatrixError as exc:
            if exc.status not in (400, 403):  # a refusal the race explains; anything else is a bug
                raise
            ok = False
        with self._lock:
            self.done += ok
            self.refused += not ok

    def scripts(self, steps: int) -> List[List[Action]]:
        rng = random.Random(self.seed)
        scripts = [self._user_script(u, random.Random(rng.random()), steps) for u in self.users]
        scripts.append(self._admin_script(random.Random(rng.random()), max(1, steps // 3)))
        return scripts

    def sequential(self, steps: int) -> None:
        """One action at a time, round robin over the users: no event has two prev events."""
        scripts = self.scripts(steps)
        while any(scripts):
            for script in scripts:
                if script:
                    self._run(script.pop(0))

    def concurrent(self, steps: int) -> None:
        """Every user's script in its own thread, all at once."""
        from test_concurrency import run_threads

        scripts = self.scripts(steps)
        barrier = threading.Barrier(len(scripts))

        def worker(script: List[Action]) -> None:
            barrier.wait()
            for action in script:
                self._run(action)

        run_threads([lambda s=s: worker(s) for s in scripts])


def play(hs: Homeserver, *, users: int, steps: int, concurrent: bool, seed: int,
         room_version: Optional[str] = None) -> Tuple[str, Activity]:
    """Register users, create a public room and let them act; the room ID and the activity."""
    admin = hs.register(f"admin{seed}", admin=True)
    members = [hs.register(f"user{seed}x{i}") for i in range(users)]
    body: Dict[str, Any] = {"preset": "public_chat", "name": "roomstate test",
                            "power_level_content_override": {"state_default": 0, "users_default": 0,
                                                             "events": {"m.room.topic": 0}}}
    if room_version is not None:
        body["room_version"] = room_version
    room = admin.create_room(**body)
    activity = Activity(admin, members, room, seed=seed)
    (activity.concurrent if concurrent else activity.sequential)(steps)
    return room, activity
