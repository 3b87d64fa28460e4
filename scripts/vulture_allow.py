"""Names vulture reports as unused that are used by a framework or a reader vulture cannot see.

`make lint` runs vulture over src, tests, bench and scripts with this file; each line below is a name
with the reason it is live. Add a name here only with its reason; delete real dead code instead.
"""

# ruff: noqa: B018, F821
# mypy: ignore-errors

# Result dataclass fields written to JSON with dataclasses.asdict (trace/consecutive.py, report/browser.py,
# adapters/extract.py): read by users of the JSON and the HTML report.
same_top1_stderr
topk_overlap_stderr
random_top1
random_overlap
screenshot
page_height
skipped_unchanged

# Attributes set on third-party objects (tokenizers, transformers configs, scikit-learn estimators,
# typer's signature introspection): read by those libraries.
padding_side
pre_tokenizer
random_state
_attn_implementation
_experts_implementation
num_hidden_layers
__signature__

# Public API kept for users (documented in docs/): OnlineAverager.averaged_copy.
averaged_copy

# Benchmark workloads the harness runs by name in a fresh process (bench/harness.py Workload).
layer_case
ffn_case
model_case
heal_case
decode_case
profile_case

# pytest reads these by name.
pytestmark
_isolated_home

# An autouse pytest fixture (tests/conftest.py): pytest calls it for every test.
_restore_torch_threads

# A pytest hook (tests/conftest.py): pytest calls it when the session is configured.
pytest_configure

# A pytest hook (tests/conftest.py): pytest calls it to order the collected tests.
pytest_collection_modifyitems

# pytest hooks (tests/conftest.py): each test timed on the CPU clock, the times written at the end.
pytest_runtest_protocol
pytest_sessionfinish
