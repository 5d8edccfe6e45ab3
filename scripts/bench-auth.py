#!/usr/bin/env python3
"""What authentication costs per API call (issue 6), against a floor in the same run.

    cargo build --release -p wharf
    WHARF_ADMIN_TOKEN=bench-token target/release/wharf serve --listen 127.0.0.1:18933 --data-dir /tmp/auth-bench &
    python3 scripts/bench-auth.py 18933 bench-token 2000

One keep-alive connection, N requests of each kind one after another, two rounds
(the first warms up; the second is printed): the floor `GET /healthz` (no auth), `GET
/api/v1/me` (bearer token -> SHA-256 -> one query for the token, its user, role and
projects), and `GET /api/v1/pipelines?limit=50` (auth + the filtered list).
"""
import http.client, sys, time

port, token, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
conn = http.client.HTTPConnection("127.0.0.1", port)


def run(path, headers):
    times = []
    for _ in range(n):
        start = time.perf_counter()
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        response.read()
        assert response.status == 200, (path, response.status)
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return times[len(times) // 2], times[int(len(times) * 0.9)], times[int(len(times) * 0.99)]


auth = {"Authorization": "Bearer " + token}
for _ in range(2):
    floor = run("/healthz", {})
    me = run("/api/v1/me", auth)
    listed = run("/api/v1/pipelines?limit=50", auth)
print("| request | p50 ms | p90 ms | p99 ms | p50 − floor ms |")
print("|---|---|---|---|---|")
for name, t in [("floor: GET /healthz", floor), ("GET /api/v1/me", me), ("GET /api/v1/pipelines?limit=50", listed)]:
    print(f"| {name} | {t[0]:.3f} | {t[1]:.3f} | {t[2]:.3f} | {t[0] - floor[0]:.3f} |")
