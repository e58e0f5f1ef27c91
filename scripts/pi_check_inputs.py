"""Where x86 and ARM scores part: preprocess each image with tledge, hash the input tensor,
save it, and (on ARM) also run the interpreter on the x86 tensor. Used once by hand:

    .venv/bin/python scripts/pi_check_inputs.py x86 PROBE_DIR WORK/in
    chroot ROOTFS /opt/tledge-venv/bin/python /tmp/pi_check_inputs.py arm PROBE_DIR WORK/in

with PROBE_DIR holding the x86 .npy files on both sides (see scripts/results/pi_check-20261130-inputs.json).
"""

import hashlib, json, sys
from pathlib import Path
import numpy as np
from edge.bundle import load_model_info
from edge.classifier import Classifier
from edge.images import load_rgb
side, root = sys.argv[1], Path(sys.argv[2])
inp = Path(sys.argv[3])
out = {}
for name, model, labels, imgs in (("google", inp/"google/model.tflite", inp/"google/labels.txt", inp/"photos"), ("bundle", inp/"bundle", None, inp/"bundle_images")):
    clf = Classifier(load_model_info(model, labels_path=labels), threads=1)
    for p in sorted(imgs.iterdir()):
        x = clf.preprocess(load_rgb(p))
        np.save(root / f"{side}-{name}-{p.stem}.npy", x)
        s_own = clf.invoke(x)
        other = root / f"x86-{name}-{p.stem}.npy"
        s_x86in = clf.invoke(np.load(other)) if side != "x86" and other.exists() else s_own
        out[f"{name}/{p.name}"] = {"input_sha": hashlib.sha256(x.tobytes()).hexdigest()[:12], "top_own": float(np.max(s_own)), "top_given_x86_input": float(np.max(s_x86in)), "arg": int(np.argmax(s_own))}
print(json.dumps(out, indent=0))
