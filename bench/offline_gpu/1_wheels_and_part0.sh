set -u
mkdir -p /tmp/pv && cp .gpu/part00 /tmp/pv/ && ls -la /tmp/pv
python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl 2>&1 | tail -3
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 - <<'PY'
import torch, transformers, peft, accelerate, kernels, pydantic, fastcore
print("torch", torch.__version__, "transformers", transformers.__version__, "peft", peft.__version__, "accelerate", accelerate.__version__, "kernels", kernels.__version__)
from persona_vectors.models import tiny_model
from persona_vectors.generation import counter_uniform
import persona_vectors.pipeline
s = torch.arange(8) * 99991
print("noise cpu==cuda:", torch.equal(counter_uniform(s, 3, 1000), counter_uniform(s.cuda(), 3, 1000).cpu()))
PY
