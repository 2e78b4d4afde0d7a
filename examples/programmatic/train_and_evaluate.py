"""The `lm-saes train` pipeline from Python, step by step (tiny model by default).

python examples/programmatic/train_and_evaluate.py            # tiny random model, seconds
python examples/programmatic/train_and_evaluate.py smollm2-135m  # the packaged SmolLM2
"""

import os
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from lm_saes.activations import StoredActivations, generate_activations  # noqa: E402
from lm_saes.config import DataConfig, EvalConfig, ModelConfig, TrainConfig  # noqa: E402
from lm_saes.data.packing import load_token_splits  # noqa: E402
from lm_saes.evaluation import evaluate  # noqa: E402
from lm_saes.models import load_language_model  # noqa: E402
from lm_saes.saes import TopKConfig, build_sae, load_sae, make_spec  # noqa: E402
from lm_saes.stores import open_store  # noqa: E402
from lm_saes.training import Trainer  # noqa: E402

model_name = sys.argv[1] if len(sys.argv) > 1 else "tiny"
hook = "blocks.6.hook_resid_post" if model_name != "tiny" else "blocks.1.hook_resid_post"
out = open_store(tempfile.mkdtemp(prefix="lm-saes-example-"))

# 1. a model with TransformerLens hook names, and text packed into BOS-led contexts
model = load_language_model(ModelConfig(name=model_name))
splits = load_token_splits(DataConfig(max_tokens=20_000, eval_tokens=2_000, context_size=128), model.tokenizer)

# 2. activations at the hook, stored as shards with a manifest (stops at the hook's layer)
manifest = generate_activations(model, splits.train, [hook], out.child("activations"))
source = StoredActivations(out.child("activations"), [hook], seed=0)
print(f"{manifest.n_tokens} activations, mean norm {manifest.hooks[hook].mean_norm:.1f}")

# 3. an SAE (any registered architecture's config: TopKConfig, ReLUConfig, ...), trained with
#    checkpoints and a JSONL log; its spec adds what the data says (sizes, the model)
config = TopKConfig(d_sae=8 * model.d_model, k=16, hook_in=hook, hook_out=hook)
spec = make_spec(config, d_in=model.d_model, d_out=model.d_model, model=model.name)
sae = build_sae(spec)
Trainer(sae, source, TrainConfig(batch_size=512, lr=1e-3, epochs=2, checkpoint_every=20), out, hook, hook).run()
sae.save(out, "sae")

# 4. evaluation on held-out tokens, with the SAE spliced into the model
metrics = evaluate(load_sae(out.child("sae")), model, splits.eval, EvalConfig())
print(metrics.model_dump_json(indent=2))
print(f"artifacts in {out.uri}")
