"""The plain Python scoring script Vigil's batch scoring is compared with: Pillow decode,
the same preprocessing as the benchmark bundle (grey, /255, (x-0.5)/0.25, NCHW), onnxruntime,
one image at a time, over a CSV manifest, with N worker processes.

usage: python score_python.py MANIFEST.csv MODEL.onnx PROCESSES
Prints one JSON line: images, seconds, images/s.
"""
import csv
import json
import os
import sys
import time
from multiprocessing import Pool

import numpy as np
import onnxruntime as ort
from PIL import Image

manifest, model, procs = sys.argv[1], sys.argv[2], int(sys.argv[3])
base = os.path.dirname(os.path.abspath(manifest))
paths = [os.path.join(base, r["path"]) for r in csv.DictReader(open(manifest))]
session = None


def init(threads):
    global session
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    session = ort.InferenceSession(model, sess_options=so, providers=["CPUExecutionProvider"])


def score(path):
    img = Image.open(path).convert("L")
    if img.size != (128, 128):
        img = img.resize((128, 128), Image.BILINEAR)
    x = np.asarray(img, dtype=np.float32) * (1.0 / 255.0)
    x = ((x - 0.5) / 0.25)[None, None]
    p = session.run(["probabilities"], {"image": np.ascontiguousarray(x)})[0][0]
    return path, int(np.argmax(p)), float(p.max())


if __name__ == "__main__":
    # One process uses every core for inference; several processes split the cores.
    threads = max(1, (os.cpu_count() or 1) // procs)
    t = time.perf_counter()
    if procs == 1:
        init(threads)
        rows = [score(p) for p in paths]
    else:
        with Pool(procs, initializer=init, initargs=(threads,)) as pool:
            rows = pool.map(score, paths, chunksize=32)
    dt = time.perf_counter() - t
    print(json.dumps({"scorer": "python", "processes": procs, "images": len(rows), "seconds": round(dt, 3),
                      "images_per_s": round(len(rows) / dt, 1)}))
