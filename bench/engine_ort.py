"""Engine latency of onnxruntime in Python, the peer for Vigil's engine figures.

usage: python engine_ort.py MODEL.onnx THREADS [BATCH ...]
Prints one JSON line per batch size: median and p90 of 30 runs after 10 warm-ups, in ms.
Inputs are random normal tensors of the model's input shape (the numbers do not depend on
the values).
"""
import json
import sys
import time

import numpy as np
import onnxruntime as ort

path, threads = sys.argv[1], int(sys.argv[2])
batches = [int(b) for b in sys.argv[3:]] or [1, 8]
so = ort.SessionOptions()
so.intra_op_num_threads = threads
so.inter_op_num_threads = 1
so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
s = ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])
inp = s.get_inputs()[0]
rng = np.random.default_rng(0)
for b in batches:
    shape = [b] + [int(d) for d in inp.shape[1:]]
    x = rng.standard_normal(shape, dtype=np.float32)
    for _ in range(10):
        s.run(None, {inp.name: x})
    ts = []
    for _ in range(30):
        t = time.perf_counter()
        s.run(None, {inp.name: x})
        ts.append((time.perf_counter() - t) * 1000)
    print(json.dumps({"engine": "onnxruntime-python", "model": path.split("/")[-1], "threads": threads, "batch": b,
                      "median_ms": round(float(np.median(ts)), 3), "p90_ms": round(float(np.percentile(ts, 90)), 3)}))
