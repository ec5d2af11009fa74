"""The logged model as a chat model: requests -> sampling settings and prompts, the OpenAI-style
answer, and the tiny model logged from its folder, loaded back and served over MLflow's scoring
protocol, answering as the project's own rollout does."""

import math

import pytest
from servers import mlflow_store  # noqa: F401

from lad.rollout.base import Completion, SamplingParams
from lad.tracking.chat_model import ChatSettings, chat_completion, request_messages, request_sampling

USER = [{"role": "user", "content": "2 + 3 ="}]
SETTINGS = ChatSettings(temperature=0.6, top_p=0.9, max_new_tokens=24, stop=["\n\n"], model_name="policy")


def test_a_request_that_sets_nothing_gets_the_models_settings():
    assert request_sampling({"messages": USER}, SETTINGS) == SamplingParams(temperature=0.6, top_p=0.9, max_new_tokens=24,
                                                                            stop=["\n\n"])
    # a DataFrame of several requests holds None and NaN where one lacks a field
    assert request_sampling({"messages": USER, "temperature": math.nan, "max_tokens": None}, SETTINGS) == request_sampling(
        {"messages": USER}, SETTINGS)


def test_each_field_of_the_request_overrides_its_setting():
    request = {"messages": USER, "temperature": 0.0, "max_tokens": 5, "top_p": 0.5, "stop": "x", "n": 2, "stream": False}
    assert request_sampling(request, SETTINGS) == SamplingParams(temperature=0.0, top_p=0.5, max_new_tokens=5, stop=["x"], n=2)
    assert request_sampling({"messages": USER, "stop": ["a", "b"], "max_tokens": 3.0}, SETTINGS).model_dump() == {
        **SamplingParams(temperature=0.6, top_p=0.9, max_new_tokens=3, stop=["a", "b"]).model_dump()}


@pytest.mark.parametrize("request_fields, message", [
    ({"max_tokens": 0}, "chat request field 'max_tokens': Input should be greater than 0"),
    ({"temperature": -1.0}, "chat request field 'temperature': Input should be greater than or equal to 0"),
    ({"top_p": 1.5}, "chat request field 'top_p': Input should be less than or equal to 1"),
    ({"top_k": 5}, "chat request field 'top_k': not supported by this model; leave it out"),
    ({"tools": [{"type": "function"}]}, "chat request field 'tools': not supported by this model; leave it out"),
    ({"stream": True}, "chat request field 'stream': streaming is not supported; leave it out or set it to false"),
])
def test_a_field_the_model_cannot_honour_is_named(request_fields, message):
    with pytest.raises(ValueError) as err:
        request_sampling({"messages": USER, **request_fields}, SETTINGS)
    assert str(err.value) == message


def test_messages_keep_role_and_content_only():
    given = [{"role": "system", "content": "Be brief.", "name": None}, {"role": "user", "content": None, "tool_calls": None}]
    assert request_messages({"messages": given}) == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": ""}]
    with pytest.raises(ValueError, match=r"^chat request field 'messages': expected a non-empty list of \{role, content\}$"):
        request_messages({"messages": []})
    with pytest.raises(ValueError, match=r"^chat request field 'messages', message 1: expected \{role, content\}"):
        request_messages({"messages": [USER[0], {"content": "no role"}]})


def test_the_answer_is_an_openai_chat_completion():
    done = [Completion(text="5", token_ids=[7, 2], logprobs=[0.0, 0.0], finish_reason="stop"),
            Completion(text="4 + 1", token_ids=[9, 9, 9], logprobs=[0.0] * 3, finish_reason="length")]
    answer = chat_completion(done, 11, "policy")
    assert answer.pop("id").startswith("chatcmpl-") and isinstance(answer.pop("created"), int)
    assert answer == {
        "object": "chat.completion", "model": "policy",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "5"}, "finish_reason": "stop"},
                    {"index": 1, "message": {"role": "assistant", "content": "4 + 1"}, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16},
    }


def test_the_logged_folder_answers_chat_requests_in_process_and_over_the_scoring_protocol(tiny, tmp_path, mlflow_store):
    """Logged from its folder with evaluation-like settings (sampled, 8 tokens): loaded back, a
    request at temperature 0 is answered as the project's greedy rollout answers the same
    messages; the OpenAI chat body that ``mlflow models serve`` takes gets the same answer."""
    import mlflow
    from mlflow.pyfunc.scoring_server import init
    from starlette.testclient import TestClient

    from lad.modeling import save_model
    from lad.rollout import build_rollout
    from lad.tracking import Tracker, TrackingConfig

    folder = tmp_path / "model"
    save_model(*tiny, folder, {"base_model": "tiny:1m"})
    tracker = Tracker(TrackingConfig(experiment="chat"))
    settings = ChatSettings(temperature=1.0, max_new_tokens=8, engine="native", model_name="tiny-chat")
    with tracker.run("pipeline"), tracker.stage("register") as stage:
        uri = stage.log_model(str(folder), chat=settings)
    config = mlflow.models.get_model_info(uri).flavors["python_function"]["config"]
    assert config == settings.model_dump(), "the settings are the model's model_config, shown in MLflow"

    model = mlflow.pyfunc.load_model(uri)
    ours = build_rollout("hf", *tiny).generate([USER], SamplingParams(temperature=0, max_new_tokens=8))[0][0]
    answer = model.predict({"messages": USER, "temperature": 0.0})
    assert answer["model"] == "tiny-chat" and answer["choices"] == [
        {"index": 0, "message": {"role": "assistant", "content": ours.text}, "finish_reason": ours.finish_reason}]
    assert answer["usage"]["completion_tokens"] == len(ours.token_ids) and answer["usage"]["prompt_tokens"] == len(ours.prompt_token_ids)
    sampled = model.predict({"messages": USER, "n": 3})  # the logged default: sampled at T = 1, 8 tokens
    assert len(sampled["choices"]) == 3 and sampled["usage"]["completion_tokens"] <= 24

    client = TestClient(init(model))
    served = client.post("/invocations", json={"messages": USER, "temperature": 0, "max_tokens": 8})
    assert served.status_code == 200, served.text
    assert served.json()["choices"] == answer["choices"]
    refused = client.post("/invocations", json={"messages": USER, "top_k": 4})
    assert refused.status_code == 400 and "chat request field 'top_k': not supported by this model" in refused.text
