"""Batching-engine metrics of GGUF models, read at scrape time from a replica's report.

Like the other per-replica gauges (serve_app/ops/model_metrics.py), these are one running replica's
figures, labelled with its node. Throughput: `rate(aicore_engine_decode_tokens_total[1m]) /
rate(aicore_engine_decode_seconds_total[1m])` is decode tokens per second of engine time.
"""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from deployments.engine.steps import TOKEN_BUCKETS


def engine_families(views: dict) -> list:
    labels = ["model", "node"]
    slots = GaugeMetricFamily("aicore_engine_slots", "Sequence slots of a replica (`parallel`).", labels=labels)
    busy = GaugeMetricFamily("aicore_engine_slots_busy", "Slots decoding or prefilling a request now.", labels=labels)
    queue = GaugeMetricFamily("aicore_engine_queue_length", "Requests waiting for a slot, by priority.",
                              labels=labels + ["priority"])
    refused = CounterMetricFamily("aicore_engine_refused_overload", "Requests answered 503 because the queue "
                                  "was full or the wait too long (replica lifetime).", labels=labels + ["priority"])
    tokens = {kind: CounterMetricFamily(f"aicore_engine_{kind}_tokens", f"Tokens the engine {verb}.", labels=labels)
              for kind, verb in (("prefill", "read from prompts"), ("decode", "generated"),
                                 ("prefix_reused", "found in a slot's cache instead of computing them"))}
    seconds = {kind: CounterMetricFamily(f"aicore_engine_{kind}_seconds", f"Engine step time spent on {kind} "
                                         "tokens (a step's time shared by its tokens).", labels=labels)
               for kind in ("prefill", "decode")}
    saved_gauges = {kind: GaugeMetricFamily(f"aicore_engine_saved_prompt_{kind}", text, labels=labels)
                    for kind, text in (("entries", "Conversations' KV copies held in host memory (gguf)."),
                                       ("bytes", "Host memory those copies take (gguf, `saved_prompt_budget`)."))}
    saved_counters = {kind: CounterMetricFamily(f"aicore_engine_saved_prompt_{kind}", text, labels=labels)
                      for kind, text in (("saved", "Slot KV copied to host memory before another chat took the slot."),
                                         ("restored", "Copies restored into a slot for a conversation's next turn."),
                                         ("restored_tokens", "Prompt tokens those restores spared computing."),
                                         ("evicted", "Copies dropped, least recently used, to stay in budget."))}
    steps = HistogramMetricFamily("aicore_engine_step_tokens", "Tokens in one engine step (one llama_decode).",
                                  labels=labels)
    for name, view in views.items():
        engine = view.live.get("engine")
        if not engine:
            continue
        key = [name, view.live.get("node_id") or "unknown"]
        slots.add_metric(key, engine["parallel"])
        busy.add_metric(key, engine["slots_busy"])
        for priority, length in engine["waiting"].items():
            queue.add_metric(key + [priority], length)
        for priority, count in engine["refused"].items():
            refused.add_metric(key + [priority], count)
        for kind, family in tokens.items():
            family.add_metric(key, engine[f"{kind}_tokens"])
        for kind, family in seconds.items():
            family.add_metric(key, engine[f"{kind}_seconds"])
        saved = engine.get("saved_prompts")  # the GGUF engine's only
        if saved:
            for kind, family in saved_gauges.items():
                family.add_metric(key, saved[kind])
            for kind, family in saved_counters.items():
                family.add_metric(key, saved[kind])
        cumulative, buckets = 0, []
        for bound, count in zip([str(b) for b in TOKEN_BUCKETS] + ["+Inf"], engine["step_token_buckets"]):
            cumulative += count
            buckets.append((bound, cumulative))
        steps.add_metric(key, buckets, engine["step_token_sum"])
    return [slots, busy, queue, refused, *tokens.values(), *seconds.values(), *saved_gauges.values(),
            *saved_counters.values(), steps]
