#!/usr/bin/env python3
"""Peak memory of `vigil serve` under worst-case uploads (issue 19).

Starts the server on a temporary data directory, then sends N concurrent uploads of each kind
and samples the server's RSS every 20 ms:
  - bomb:  a 9999 x 9999 16-bit PNG (about 0.6 MB encoded, 100 MP decoded): over
           server.max_image_pixels, must be refused (413) from its header;
  - large: a 5400 x 5400 16-bit PNG (29 MP, under the limit): decoded under the memory
           budget, the rest refused with 503 until memory frees;
  - film:  a real weld film from ../shared/data/weld-films (about 10 MP, 8-bit), when present.
Prints the status codes and the peak RSS of each round. Needs numpy and Pillow.

With --calibrate the server runs with the memory budget off, one preprocess thread and a
200 MP limit, and each image is sent alone: the peak RSS growth per decoded sample is what
vigil_engine::preprocess::PEAK_BYTES_PER_SAMPLE is set from.

usage: bench/memory.py [--vigil target/release/vigil] [--concurrency 64] [--calibrate]
"""

import argparse
import collections
import http.client
import io
import os
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def png16(w, h):
    a = np.zeros((h, w), dtype=np.uint16)
    a[::7, ::5] = 40000
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vigil", default=os.path.join(ROOT, "target/release/vigil"))
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--calibrate", action="store_true", help="measure bytes per sample, budget off")
    a = p.parse_args()
    work = tempfile.mkdtemp(prefix="vigil-memory-")
    env = dict(os.environ, VIGIL__STORE__DATA_DIR=os.path.join(work, "data"), VIGIL__SERVER__PORT="0",
               VIGIL__LOG__LEVEL="warn")
    if a.calibrate:
        env.update(VIGIL__SERVER__MEMORY_BUDGET="0", VIGIL__SERVER__MAX_IMAGE_PIXELS="200000000",
                   VIGIL__SERVER__PREPROCESS_THREADS="1")
        a.concurrency = 1
    proc = subprocess.Popen([a.vigil, "serve"], stdout=subprocess.PIPE, stderr=open(os.path.join(work, "serve.log"), "wb"), env=env)
    host, port = proc.stdout.readline().decode().strip().removeprefix("listening on http://").rsplit(":", 1)
    port = int(port)
    for _ in range(300):
        try:
            c = http.client.HTTPConnection(host, port, timeout=5)
            c.request("GET", "/readyz")
            if c.getresponse().status == 200:
                break
        except OSError:
            pass
        time.sleep(0.2)
    kinds = [("bomb 9999x9999 16-bit", png16(9999, 9999)), ("large 5400x5400 16-bit", png16(5400, 5400))]
    film = os.path.join(ROOT, "..", "shared", "data", "weld-films", "RRT-46R.png")
    if os.path.exists(film):
        kinds.append(("film RRT-46R 4830x2013 8-bit", open(film, "rb").read()))
    base = rss_mb(proc.pid)
    print(f"idle RSS {base:.0f} MB; {a.concurrency} concurrent uploads of each:")
    for name, body in kinds:
        statuses = collections.Counter()
        peak = [0.0]
        done = threading.Event()

        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], rss_mb(proc.pid))
                time.sleep(0.02)

        def upload():
            try:
                c = http.client.HTTPConnection(host, port, timeout=120)
                c.request("POST", "/v1/models/weldnet/predict", body=body, headers={"content-type": "image/png"})
                r = c.getresponse()
                r.read()
                statuses[r.status] += 1
            except OSError as e:
                statuses[type(e).__name__] += 1

        before = rss_mb(proc.pid)
        s = threading.Thread(target=sample)
        s.start()
        t = time.time()
        threads = [threading.Thread(target=upload) for _ in range(a.concurrency)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        done.set()
        s.join()
        print(f"  {name} ({len(body) / 1e6:.1f} MB encoded): {dict(statuses)} in {time.time() - t:.1f} s, "
              f"peak RSS {peak[0]:.0f} MB")
        if a.calibrate:
            img = Image.open(io.BytesIO(body))
            samples = img.width * img.height * len(img.getbands())
            print(f"    {(peak[0] - before) * 2**20 / samples:.1f} bytes per sample over the RSS before it")
    proc.terminate()
    proc.wait(30)
    sys.exit(0)


if __name__ == "__main__":
    main()
