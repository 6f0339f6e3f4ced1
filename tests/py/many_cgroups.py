"""What one user can do in its own cgroup subtree: make COUNT cgroups
(PARENT/flood-N.service) and ask for credentials from each, as a new
workload would, so that each is a session of its own. Run as that user,
in a cgroup below PARENT's parent it owns. Prints one JSON line:
{"asked": n, "statuses": {status: count}}.

Usage: many_cgroups.py PARENT COUNT URL"""

import json
import os
import sys
import urllib.error
import urllib.request


def main():
    parent, count, url = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    os.makedirs(parent, exist_ok=True)
    statuses = {}
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    cgroups = [os.path.join(parent, f"flood-{i}.service") for i in range(count)]
    for cgroup in cgroups:
        os.mkdir(cgroup)
    for cgroup in cgroups:
        with open(os.path.join(cgroup, "cgroup.procs"), "w") as procs:
            procs.write(str(os.getpid()))
        try:
            with opener.open(url, timeout=5) as answer:
                status = answer.status
        except urllib.error.HTTPError as e:
            status = e.code
        except OSError as e:
            status = type(e).__name__
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    print(json.dumps({"asked": count, "statuses": statuses}), flush=True)


if __name__ == "__main__":
    main()
