"""Settings of bench/llm_call_vs_drf.py's server: kaapi's, with the obvious DRF view mounted beside the API
(bench/drf_llm_call.py). Bench only: the product never serves it."""

from kaapi.settings import *  # noqa: F403

ROOT_URLCONF = "bench.drf_llm_call"
