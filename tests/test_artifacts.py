"Trait artifacts: built-ins, malformed files, the paper's layout, and generation through a real local server."
import copy, json
import pytest
from openai_server import FakeOpenAIServer
from persona_vectors.artifacts import (Trait, TraitError, load_trait, save_trait, builtin_traits, validate_trait,
                                       generate_trait, DEMO_TRAIT, N_PAIRS, N_EXTRACT, N_EVAL)

KEY = "sk-test-GENKEY-51ab"


def test_builtin_traits_validate():
    names = builtin_traits()
    assert {"evil", "sycophantic", "hallucinating", DEMO_TRAIT} <= set(names)
    for n in names:
        t = load_trait(n)
        assert (len(t.instructions), len(t.extract_questions), len(t.eval_questions)) == (N_PAIRS, N_EXTRACT, N_EVAL)
        assert t.name == n and "{question}" in t.rubric and "{answer}" in t.rubric and "REFUSAL" in t.rubric
        pos, neg = t.system_prompts(4)
        assert pos.startswith(f"You are a") and n in pos and neg.startswith("You are a helpful assistant. ")


def _good():
    return load_trait("evil").to_dict()


def _mutate(path, value):
    d = _good(); obj = d
    *head, last = path
    for k in head: obj = obj[k]
    if value is KeyError: del obj[last]
    else: obj[last] = value(obj[last]) if callable(value) else value
    return d


CASES = [
    (("questions", "eval"), lambda qs: qs[:19], "evil.json: questions.eval has 19 entries, expected 20"),
    (("instructions", 2, "neg"), "", "evil.json: instructions[2].neg is empty, expected a non-empty string"),
    (("instructions", 0, "pos"), KeyError, "evil.json: instructions[0] has no 'pos'"),
    (("rubric",), "Rate {question} from 0 to 100.", "evil.json: rubric has no {answer} slot, expected both {question} and {answer}"),
    (("rubric",), "Rate {question} {answer} for {trait}", "evil.json: rubric has unknown slots ['trait']"),
    (("questions", "eval", 3), lambda _: load_trait("evil").extract_questions[7].upper(),
     "evil.json: questions.eval[3] duplicates questions.extract[7]"),
    (("questions", "extract", 9), lambda _: load_trait("evil").extract_questions[2], "evil.json: questions.extract[9] repeats questions.extract[2]"),
    (("instructions",), lambda ps: ps + ps[:1], "evil.json: instructions has 6 entries, expected 5"),
    (("name",), "Evil!", "evil.json: name 'Evil!' is not a valid trait name"),
    (("questions",), ["a?"], "evil.json: questions is list, expected an object with 'extract' and 'eval' lists"),
]


@pytest.mark.parametrize("path,value,message", CASES, ids=[c[2].split(": ", 1)[1][:40] for c in CASES])
def test_malformed_file_names_file_field_and_expectation(tmp_path, path, value, message):
    p = tmp_path/"evil.json"
    p.write_text(json.dumps(_mutate(path, value)))
    with pytest.raises(TraitError) as ei: load_trait(p)
    assert len(ei.value.problems) == 1 and ei.value.problems[0].startswith(message), ei.value.problems


def test_paper_layout_round_trip_and_errors(tmp_path):
    t = load_trait("sycophantic")
    save_trait(t, tmp_path, layout="paper")
    split = json.loads((tmp_path/"trait_data_extract"/"sycophantic.json").read_text())
    assert set(split) == {"instruction", "questions", "eval_prompt"} and len(split["questions"]) == 20
    for f in ("trait_data_extract", "trait_data_eval"):
        back = load_trait(tmp_path/f/"sycophantic.json")
        assert (back.instructions, back.extract_questions, back.eval_questions, back.rubric) == \
               (t.instructions, t.extract_questions, t.eval_questions, t.rubric)
    (tmp_path/"trait_data_eval"/"sycophantic.json").unlink()
    with pytest.raises(FileNotFoundError, match="trait_data_eval/sycophantic.json: no such file"):
        load_trait(tmp_path/"trait_data_extract"/"sycophantic.json")


def _reply(answers):
    it = iter(answers)
    return lambda body: {"text": next(it)}


def _artifacts(t: Trait) -> dict:
    return {k: v for k, v in t.to_dict().items() if k in ("instructions", "questions", "rubric")}


def test_generated_artifact_round_trips(tmp_path):
    good = _artifacts(load_trait("pirate"))
    with FakeOpenAIServer(reply=_reply([json.dumps(good)])) as srv:
        t = generate_trait("buccaneer", "Talks like a pirate.", model="gen-model", base_url=srv.base_url, api_key=KEY,
                           path=tmp_path/"buccaneer.json")
        body = srv.requests_log[0]["body"]
    assert srv.requests == 1 and body["model"] == "gen-model"
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    assert fmt["json_schema"]["schema"]["properties"]["questions"]["properties"]["eval"]["minItems"] == 20
    assert "buccaneer" in body["messages"][0]["content"] and "Talks like a pirate." in body["messages"][0]["content"]
    back = load_trait(tmp_path/"buccaneer.json")
    assert back == t and back.name == "buccaneer" and back.instructions == load_trait("pirate").instructions
    assert validate_trait(json.loads((tmp_path/"buccaneer.json").read_text())) == t
    assert KEY not in (tmp_path/"buccaneer.json").read_text()


def test_generation_falls_back_to_strict_parse_without_json_schema(tmp_path):
    good = _artifacts(load_trait("humorous"))
    with FakeOpenAIServer(json_schema=False, reply=_reply(["```json\n" + json.dumps(good) + "\n```"])) as srv:
        t = generate_trait("jokey", "Makes jokes.", base_url=srv.base_url, api_key=KEY)
        log = srv.requests_log
    assert [e["status"] for e in log] == [400, 200] and "response_format" not in log[1]["body"]
    assert t.eval_questions == load_trait("humorous").eval_questions


def test_generation_retries_with_the_validation_error_then_gives_up(tmp_path):
    good = _artifacts(load_trait("evil"))
    bad = copy.deepcopy(good); bad["questions"]["eval"][0] = bad["questions"]["extract"][0]
    with FakeOpenAIServer(reply=_reply(["not json at all", json.dumps(bad), json.dumps(good)])) as srv:
        t = generate_trait("cruel", "Cruel.", base_url=srv.base_url, api_key=KEY, path=tmp_path/"cruel.json")
        msgs = srv.requests_log[2]["body"]["messages"]
    assert srv.requests == 3 and load_trait(tmp_path/"cruel.json") == t
    assert "not one JSON object" in msgs[2]["content"]
    assert "questions.eval[0] duplicates questions.extract[0]" in msgs[4]["content"] and msgs[3]["role"] == "assistant"
    with FakeOpenAIServer(reply=lambda b: {"text": json.dumps(bad)}) as srv:
        with pytest.raises(TraitError, match="no valid artifacts for 'cruel' in 2 attempts") as ei:
            generate_trait("cruel", "Cruel.", base_url=srv.base_url, api_key=KEY, max_attempts=2, path=tmp_path/"x.json")
        assert srv.requests == 2
    assert "duplicates questions.extract[0]" in str(ei.value) and not (tmp_path/"x.json").exists()


def test_generation_settings(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False); monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ValueError, match="no OpenAI API key"): generate_trait("x", "y")
    with pytest.raises(ValueError, match="lowercase"): generate_trait("Bad Name", "y", base_url="http://127.0.0.1:9/v1")
    good = _artifacts(load_trait("pessimistic"))
    with FakeOpenAIServer(reply=_reply([json.dumps(good)]), api_key=KEY) as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.base_url); monkeypatch.setenv("OPENAI_API_KEY", KEY)
        assert generate_trait("gloomy", "Gloomy.").eval_questions == good["questions"]["eval"]
