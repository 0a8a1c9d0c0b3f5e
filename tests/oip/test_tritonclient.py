"""Vigil speaks the Open Inference Protocol: the official Triton HTTP client (tritonclient)
checks health, metadata and inference against a running `vigil serve`, and the values must
match Vigil's own native API for the same image.

usage: python test_tritonclient.py HOST:PORT MODEL IMAGE.png
Exits non-zero on the first failed check; prints one line per check.
"""
import json
import sys
import urllib.request

import numpy as np
import tritonclient.http as httpclient

url, model, image_path = sys.argv[1], sys.argv[2], sys.argv[3]
image = open(image_path, "rb").read()
client = httpclient.InferenceServerClient(url=url)
checks = 0


def check(ok, what):
    global checks
    if not ok:
        print(f"FAIL {what}")
        sys.exit(1)
    checks += 1
    print(f"ok   {what}")


check(client.is_server_live(), "server is live")
check(client.is_server_ready(), "server is ready")
check(client.is_model_ready(model), f"model {model} is ready")
meta = client.get_model_metadata(model)
check(meta["name"] == model, "metadata names the model")
inp = meta["inputs"][0]
check(inp["name"] == "image" and inp["datatype"] == "FP32" and inp["shape"][1:] == [1, 128, 128],
      f"metadata input {inp}")
outputs = {o["name"]: o for o in meta["outputs"]}
check("probabilities" in outputs and outputs["probabilities"]["datatype"] == "FP32", "metadata outputs")

# The native API's answer for the same image is the reference.
req = urllib.request.Request(f"http://{url}/v1/models/{model}/predict", data=image,
                             headers={"Content-Type": "image/png"}, method="POST")
native = json.load(urllib.request.urlopen(req))
# Probabilities come keyed by label; the output tensor is in the model's label order.
models = json.load(urllib.request.urlopen(f"http://{url}/v1/models"))
entry = next(m for m in (models["models"] if isinstance(models, dict) else models) if m["name"] == model)
labels = entry["labels"]
native_p = np.array([native["probabilities"][l] for l in labels], dtype=np.float32)

# 1. Encoded image as BYTES (binary tensor extension): the server runs the bundle's own
#    preprocessing, so the probabilities must equal the native API's exactly.
b = httpclient.InferInput("image", [1], "BYTES")
b.set_data_from_numpy(np.array([image], dtype=np.object_), binary_data=True)
r = client.infer(model, [b], outputs=[httpclient.InferRequestedOutput("probabilities", binary_data=True)])
p = r.as_numpy("probabilities")
check(p.shape == (1, len(labels)), f"BYTES infer gives probabilities of shape {p.shape}")
diff = float(np.abs(p[0] - native_p).max())
check(diff <= 1e-6, f"BYTES infer equals the native API (max |diff| {diff:.1e})")

# 2. FP32 tensor, preprocessed here as the bundle declares (grey, standardise, NCHW), sent as
#    JSON and as binary: equal to the native answer within float rounding.
from PIL import Image  # noqa: E402

x = np.asarray(Image.open(image_path).convert("L"), dtype=np.float64)
x = ((x - x.mean()) / max(x.std(), 1e-6)).astype(np.float32)[None, None]
for binary in (False, True):
    t = httpclient.InferInput("image", list(x.shape), "FP32")
    t.set_data_from_numpy(x, binary_data=binary)
    r = client.infer(model, [t], outputs=[httpclient.InferRequestedOutput("probabilities", binary_data=binary)])
    p = r.as_numpy("probabilities")
    check(np.allclose(p[0], native_p, atol=1e-4), f"FP32 infer ({'binary' if binary else 'JSON'}) matches the native API")

# 3. A wrong shape is refused with an error, not a crash.
try:
    t = httpclient.InferInput("image", [1, 3, 128, 128], "FP32")
    t.set_data_from_numpy(np.zeros((1, 3, 128, 128), np.float32))
    client.infer(model, [t])
    check(False, "a wrong shape is refused")
except Exception as e:  # tritonclient raises InferenceServerException
    check("shape" in str(e).lower(), f"a wrong shape is refused ({str(e)[:80]})")

stats = client.get_inference_statistics(model)
count = int(stats["model_stats"][0]["inference_count"])
check(count >= 4, f"statistics count the inferences ({count})")
print(f"{checks} passed, 0 failed")
