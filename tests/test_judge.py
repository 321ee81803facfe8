"The judges against a real local chat-completions server, talked to with the real `openai` client."
import logging, math, pickle, sqlite3
import pytest
import torch
from openai_server import FakeOpenAIServer, expected_score, prompt_of
from persona_vectors.judge import (OpenAIJudge, LocalJudge, Score, JudgeError, COHERENCE_RUBRIC, MIN_MASS,
                                   summarize, score_from_logprobs)

RUBRIC = "Rate this answer from 0 to 100.\nQuestion: {question}\nAnswer: {answer}\nReply with the number only."
KEY = "sk-test-LEAKCHECK-7f3a9c"
L = math.log


@pytest.fixture
def server():
    "Start `FakeOpenAIServer`s on free loopback ports; stop them after the test."
    started = []
    def start(**kw):
        srv = FakeOpenAIServer(**kw).start(); started.append(srv); return srv
    yield start
    for s in started: s.stop()


def judge_for(srv, tmp_path=None, **kw):
    kw.setdefault("cache", tmp_path/"judge.sqlite" if tmp_path else None)
    return OpenAIJudge("test-judge", base_url=srv.base_url, api_key=kw.pop("api_key", KEY), **kw)


# crafted top-logprob tables (probabilities) and the score each must give
TABLES = {
    "mixed": ([("80", 0.6), ("90", 0.2), ("The", 0.2)], (80*0.6 + 90*0.2) / 0.8),
    "spaces and junk": ([(" 50", 0.3), ("50", 0.2), ("100", 0.1), ("101", 0.2), ("-5", 0.1), ("abc", 0.1)], (50*0.5 + 100*0.1) / 0.6),
    "at threshold": ([("7", 0.25), ("I", 0.75)], 7.0),
    "below threshold": ([("7", 0.2), ("9", 0.04), ("I", 0.76)], None),
    "refusal": ([("REF", 0.95), ("0", 0.05)], None),
    "all integers": ([(str(n), 1 / 21) for n in range(0, 101, 5)], None),  # 21 entries: the server keeps the top 20
}


def test_logprob_scores_are_exact_weighted_means(server):
    srv = server(reply=lambda b: {"logprobs": [(t, L(p)) for t, p in TABLES[prompt_of(b).split("Answer: ")[1].split("\n")[0]][0]]})
    names = list(TABLES)
    scores = judge_for(srv).score([("q", n) for n in names], RUBRIC, progress=False)
    got = dict(zip(names, scores))
    for n in ("mixed", "spaces and junk", "at threshold"):
        assert got[n].score == pytest.approx(TABLES[n][1], abs=1e-9), n
        assert got[n].reason is None
    assert got["below threshold"] == Score(None, "low_numeric_mass", pytest.approx(0.24))
    assert got["refusal"].score is None and got["refusal"].reason == "refusal"
    top20 = list(range(0, 100, 5))  # the 21st entry (100) is not among the top 20 the server returns
    assert got["all integers"].score == pytest.approx(sum(top20) / 20, abs=1e-9)
    assert got["all integers"].mass == pytest.approx(20 / 21)
    body = srv.requests_log[0]["body"]
    assert (body["max_tokens"], body["temperature"], body["logprobs"], body["top_logprobs"]) == (1, 0, True, 20)


def test_text_mode_numbers_and_refusal(server):
    replies = {"a": "73", "b": "REFUSAL", "c": "Score: 40.5", "d": "I cannot rate this.", "e": "250", "f": "refusal."}
    srv = server(reply=lambda b: {"text": replies[prompt_of(b).split("Answer: ")[1][0]]})
    scores = judge_for(srv, mode="text").score([("q", k) for k in replies], RUBRIC, progress=False)
    assert scores == [Score(73.0), Score(None, "refusal"), Score(40.5), Score(None, "no_number"), Score(None, "no_number"),
                      Score(None, "refusal")]
    assert "logprobs" not in srv.requests_log[0]["body"]


def test_missing_logprobs_says_use_text_mode(server):
    srv = server(logprobs=False)
    with pytest.raises(JudgeError, match="no logprobs.*mode='text'"):
        judge_for(srv).score([("q", "a")], RUBRIC, progress=False)


def test_fault_injection_200_answers(server, tmp_path):
    "30% of requests fail (429 / 500 / slower than the timeout): every answer is scored once; a rerun sends nothing."
    srv = server(fail_rate=0.3, slow_s=0.8, seed=1)
    items = [(f"Question {i}?", f"Answer {i}.") for i in range(200)]
    judge = judge_for(srv, tmp_path, timeout=0.4, backoff=0.005, max_backoff=0.05, concurrency=32)
    scores = judge.score(items, RUBRIC, progress=False)
    assert [s.score for s in scores] == [pytest.approx(expected_score(RUBRIC.format(question=q, answer=a)), abs=1e-9) for q, a in items]
    assert all(s.reason is None for s in scores)
    assert set(srv.failures) == {"429", "500", "slow"} and sum(srv.failures.values()) >= 0.2 * srv.requests
    st = judge.stats
    assert st["failed"] == 0 and st["retries"] == st["requests"] - 200 and srv.requests <= st["requests"]
    con = sqlite3.connect(tmp_path/"judge.sqlite")
    n_rows, n_keys = con.execute("SELECT COUNT(*), COUNT(DISTINCT key) FROM replies").fetchone()
    prompts = [p for (p,) in con.execute("SELECT prompt FROM replies")]
    assert n_rows == n_keys == 200 and len(set(prompts)) == 200  # no duplicate records
    # a rerun, by this judge and by a fresh one on the same cache file, sends zero requests
    before = srv.requests
    assert judge.score(items, RUBRIC, progress=False) == scores and judge.stats["requests"] == 0
    fresh = judge_for(srv, tmp_path)
    assert fresh.score(items, RUBRIC, progress=False) == scores
    assert srv.requests == before and fresh.stats["cached"] == 200


def test_error_after_last_retry_counts_scored_answers(server, tmp_path):
    items = [(f"q{i}", f"a{i}") for i in range(5)]
    ok = server()
    judge_for(ok, tmp_path).score(items[:2], RUBRIC, progress=False)  # two answers already in the cache
    bad = server(fail_rate=1.0, fail_modes=("500",), max_consecutive_failures=10**9)
    with pytest.raises(JudgeError) as ei:
        judge_for(bad, tmp_path, max_retries=2, backoff=0.001).score(items, RUBRIC, progress=False)
    msg = str(ei.value)
    assert "3 of 5 distinct prompts failed after 2 retries each" in msg and "2 of 5 answers were scored" in msg
    assert "InternalServerError (500)" in msg and KEY not in msg
    assert bad.requests == 3 * 3
    assert [s is not None for s in ei.value.scores] == [True, True, False, False, False]
    # the rerun against a healthy server sends only the three missing ones
    before = ok.requests
    scores = judge_for(ok, tmp_path).score(items, RUBRIC, progress=False)
    assert ok.requests - before == 3 and all(s.score is not None for s in scores)
    # on_error='none' returns the failures as Score(None, 'error') instead of raising
    got = judge_for(bad, None, max_retries=1, backoff=0.001, on_error="none").score(items[:2], RUBRIC, progress=False)
    assert got == [Score(None, "error"), Score(None, "error")]


def test_client_errors_are_not_retried(server):
    srv = server(api_key="sk-the-right-key")
    with pytest.raises(JudgeError, match="without retrying") as ei:
        judge_for(srv, max_retries=5).score([("q1", "a"), ("q2", "a")], RUBRIC, progress=False)
    assert srv.requests == 2 and "401" in str(ei.value)
    assert judge_for(srv, api_key="sk-the-right-key").score([("q1", "a")], RUBRIC, progress=False)[0].score is not None


def test_api_key_never_reaches_logs_caches_or_reprs(server, tmp_path, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)  # every logger, the openai client's and httpx's included
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    srv = server(fail_rate=0.5, fail_modes=("429", "500"), seed=3)
    judge = OpenAIJudge("test-judge", base_url=srv.base_url, cache=tmp_path/"c.sqlite", backoff=0.001)  # key from the env
    judge.score([(f"q{i}", "a") for i in range(20)], RUBRIC, progress=False)
    assert judge.stats["retries"] > 0
    assert {e["authorization"] for e in srv.requests_log} == {f"Bearer {KEY}"}  # the key was used...
    stored = [p.read_bytes().decode("latin-1") for p in tmp_path.iterdir()]  # the cache: db, -wal, -shm
    assert all(any(f"Question: q{i}\n" in b for b in stored) for i in range(20))  # the bytes read hold every record
    texts = [repr(judge), str(judge), str(vars(judge)), caplog.text] + stored  # ...and the key is nowhere in them
    assert caplog.text and len(texts) >= 5
    for t in texts: assert KEY not in t and "LEAKCHECK" not in t
    # pickling must fail because of the key itself: a judge without a cache (whose thread-local SQLite connection
    # would refuse pickling on its own) raises the key wrapper's own error
    bare = OpenAIJudge("test-judge", base_url=srv.base_url, cache=None)
    with pytest.raises(TypeError, match="an API key is not pickled"): pickle.dumps(bare)


def test_duplicate_prompts_are_sent_once_and_concurrency_is_bounded(server):
    srv = server(latency=0.03)
    items = [(f"q{i % 30}", "a") for i in range(60)]
    scores = judge_for(srv, concurrency=4).score(items, RUBRIC, progress=False)
    assert srv.requests == 30 and scores[:30] == scores[30:]
    assert 2 <= srv.max_inflight <= 4


def test_cache_key_covers_model_and_params_not_threshold(server, tmp_path):
    srv = server(reply=lambda b: {"logprobs": [("60", L(0.2)), ("x", L(0.8))]} if b.get("logprobs") else {"text": "60"})
    items = [("q", "a")]
    assert judge_for(srv, tmp_path).score(items, RUBRIC, progress=False) == [Score(None, "low_numeric_mass", pytest.approx(0.2))]
    n = srv.requests
    # a lower threshold is applied to the cached reply: no request
    assert judge_for(srv, tmp_path, min_mass=0.1).score(items, RUBRIC, progress=False)[0].score == pytest.approx(60)
    assert srv.requests == n
    # another mode or another model is another request
    assert judge_for(srv, tmp_path, mode="text").score(items, RUBRIC, progress=False) == [Score(60.0)]
    OpenAIJudge("other-judge", base_url=srv.base_url, api_key=KEY, cache=tmp_path/"judge.sqlite").score(items, RUBRIC, progress=False)
    assert srv.requests == n + 2


def test_bad_rubric_and_settings(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False); monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ValueError, match="no OpenAI API key"): OpenAIJudge()
    j = OpenAIJudge(base_url="http://127.0.0.1:9/v1", cache=None)
    with pytest.raises(ValueError, match=r"no \{answer\} slot"): j.score([("q", "a")], "Rate {question}", progress=False)
    with pytest.raises(ValueError, match="mode"): OpenAIJudge(base_url="http://127.0.0.1:9/v1", mode="logits")


def test_local_judge_equals_direct_float64_expectation():
    from persona_vectors.models import tiny_model
    threads = torch.get_num_threads(); torch.set_num_threads(1)
    try:
        m, t = tiny_model("llama", dtype=torch.float64)
        judge = LocalJudge(m, t, min_mass=0.0)
        q, a = "Why is the sky blue?", "Sunlight scatters off molecules in the air."
        prompt = judge.prompt_ids(q, a, RUBRIC)
        logp = []
        for n in range(101):  # direct: one plain forward over prompt + "n" per string, in float64
            c = t(str(n), add_special_tokens=False)["input_ids"]
            with torch.no_grad(): lp = m(input_ids=torch.tensor([prompt + c])).logits[0].log_softmax(-1)
            P = len(prompt)
            logp.append(sum(lp[P - 1 + j, c[j]] for j in range(len(c))) + lp[P - 1 + len(c), judge.stops].logsumexp(-1))
        p = torch.stack(logp).exp()
        want = float((torch.arange(101, dtype=torch.float64) * p).sum() / p.sum())
        got = judge.score([(q, a)], RUBRIC, progress=False)[0]
        assert got.score == pytest.approx(want, abs=1e-9, rel=0) and got.mass == pytest.approx(float(p.sum()), rel=1e-9)
        assert LocalJudge(m, t).score([(q, a)], RUBRIC, progress=False)[0].reason == "low_numeric_mass"  # tiny models talk
    finally:
        torch.set_num_threads(threads)


def test_summarize_counts_none():
    s = summarize([Score(50.0), Score(70.0), Score(None, "refusal"), Score(None, "low_numeric_mass")])
    assert (s["mean"], s["n"], s["n_none"]) == (60.0, 2, 2) and s["std"] == pytest.approx(math.sqrt(200))
    assert score_from_logprobs([]) == Score(None, "low_numeric_mass", 0.0) and MIN_MASS == 0.25
