#!/usr/bin/env python3
"""What a flood of wrong-password logins costs the server (issue 11), and what a
legitimate login costs against /healthz, for one or more builds in the same run.

    cargo build --release -p wharf            # and a build of the other commit, elsewhere
    python3 scripts/bench-login.py before=/path/to/old/wharf after=target/release/wharf

For each build and scenario a fresh server is started on 127.0.0.1 with its own data
directory (host executor), and stopped afterwards:

- `same user`: 100 logins at once (one connection each) for `admin` with a wrong password;
- `distinct names`: 100 logins at once for 100 unknown names (no lockout applies);
- `legit`: 10 logins with the right password one after another, against 200 `GET /healthz`
  on one keep-alive connection (p50 each).

Memory is the server process's peak resident set (`VmHWM`) and its resident set 2 s
after the flood (`VmRSS`), from /proc. Every loop is bounded in count and time.
"""
import http.client, json, os, shutil, socket, subprocess, sys, tempfile, threading, time

PASSWORD = "bench-admin-password"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def memory(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                fields[key] = int(value.split()[0]) // 1024  # MiB
    return fields


class Server:
    def __init__(self, binary):
        self.dir = tempfile.mkdtemp(prefix="wharf-bench-login-")
        self.port = free_port()
        env = dict(os.environ, WHARF_ADMIN_PASSWORD=PASSWORD, WHARF_ADMIN_TOKEN="bench-token", WHARF_LOG="warn")
        self.process = subprocess.Popen(
            [binary, "serve", "--listen", f"127.0.0.1:{self.port}", "--data-dir", self.dir, "--executor", "host"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if self.get("/healthz")[0] == 200:
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise SystemExit(f"{binary} did not answer /healthz within 60 s")

    def get(self, path):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        conn.close()
        return response.status, None

    def login(self, name, password, conn=None):
        own = conn is None
        conn = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        body = json.dumps({"name": name, "password": password})
        conn.request("POST", "/login", body=body, headers={"content-type": "application/json"})
        response = conn.getresponse()
        response.read()
        if own:
            conn.close()
        return response.status

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def flood(binary, names):
    server = Server(binary)
    try:
        start_rss = memory(server.process.pid)["VmRSS"]
        statuses = [None] * len(names)
        barrier = threading.Barrier(len(names))

        def one(i):
            barrier.wait()
            try:
                statuses[i] = server.login(names[i], "wrong-password")
            except OSError as e:
                statuses[i] = type(e).__name__

        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(names))]
        began = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        took = time.perf_counter() - began
        time.sleep(2)
        mem = memory(server.process.pid)
        counts = {}
        for s in statuses:
            counts[s] = counts.get(s, 0) + 1
        return {"start MiB": start_rss, "peak MiB": mem["VmHWM"], "after MiB": mem["VmRSS"], "seconds": took,
                "statuses": counts}
    finally:
        server.stop()


def p50(samples):
    samples = sorted(samples)
    return samples[len(samples) // 2]


def legit(binary):
    server = Server(binary)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        health = []
        for _ in range(200):
            began = time.perf_counter()
            conn.request("GET", "/healthz")
            response = conn.getresponse()
            response.read()
            health.append((time.perf_counter() - began) * 1000)
        logins = []
        for _ in range(10):
            began = time.perf_counter()
            status = server.login("admin", PASSWORD, conn)
            assert status == 200, status
            logins.append((time.perf_counter() - began) * 1000)
        conn.close()
        return p50(health), p50(logins)
    finally:
        server.stop()


builds = [arg.split("=", 1) for arg in sys.argv[1:]]
if not builds:
    raise SystemExit(__doc__)
print(f"cores: {os.cpu_count()}")
print("| build | scenario | answers | seconds | RSS at start MiB | peak RSS MiB | RSS 2 s after MiB |")
print("|---|---|---|---|---|---|---|")
for label, binary in builds:
    for scenario, names in [("same user", ["admin"] * 100), ("distinct names", [f"u{i}" for i in range(100)])]:
        r = flood(binary, names)
        answers = ", ".join(f"{n}×{s}" for s, n in sorted(r["statuses"].items(), key=str))
        print(f"| {label} | {scenario} | {answers} | {r['seconds']:.2f} | {r['start MiB']} | {r['peak MiB']} | "
              f"{r['after MiB']} |")
print()
print("| build | GET /healthz p50 ms | POST /login (right password) p50 ms |")
print("|---|---|---|")
for label, binary in builds:
    health, login = legit(binary)
    print(f"| {label} | {health:.3f} | {login:.1f} |")
