#!/usr/bin/env python3
"""The realistic big state of bench/bigstate.sh and bench/daemon.sh:

    python3 bench/bigstate.py FOLDER N PID...

writes FOLDER/envs.json and FOLDER/devices.json as genv writes them
(indented): N environments of 21 users, each with 1 or 2 of the PIDs, a
name and a creation time, a third of them attached to one of 8 GPUs (some
with a memory fraction). The same seed every time.
"""

import json
import random
import sys

path, n, pids = sys.argv[1], int(sys.argv[2]), [int(p) for p in sys.argv[3:]]
rng = random.Random(16)
users = [(1000 + u, f"user{u:02d}") for u in range(21)]
envs, devices = [], [{"index": i, "total_memory": "16384mi", "attachments": []} for i in range(8)]
for i in range(n):
    uid, name = users[i % 21]
    t = f"{rng.randint(1, 28):02d}/{rng.randint(1, 11):02d}/2026 {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}"
    gpus = rng.choice([None, 1, 2])
    envs.append({"eid": f"e{i}", "uid": uid, "creation": t, "username": name,
                 "config": {"name": f"job {i} of {name}", "gpu_memory": rng.choice([None, "4g"]), "gpus": gpus},
                 "pids": rng.sample(pids, rng.randint(1, 2)), "kernel_ids": []})
    if i % 3 == 0:
        devices[i % 8]["attachments"].append({"eid": f"e{i}", "gpu_memory": rng.choice([None, "2g"]), "time": t})
with open(f"{path}/envs.json", "w") as f:
    json.dump({"envs": envs}, f, indent=2)
with open(f"{path}/devices.json", "w") as f:
    json.dump({"devices": devices}, f, indent=2)
