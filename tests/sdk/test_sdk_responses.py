"""OpenAI-SDK conformance, Responses API: the official `openai` Python package's
`client.responses.create(...)`, pointed at fikra-gateway by its base URL, gets typed Response
objects and streamed events (translated from the sandbox's chat answers), billed to the
nano-dollar, and its refusals raise the SDK's own exception classes with `code` and `param`.

Each test states its goal in its docstring; balances and ledgers are checked through the admin API.
"""

from __future__ import annotations

import openai
import pytest

from gateway_harness import Tenant, make_tenant, usd_to_nanos
from sdk_checks import MODEL, SANDBOX_OUTPUT_TOKENS, flash_cost

PROMPT = "Habari! Tell me about Nairobi."


def test_unary_response_has_output_text_and_exact_usage(tenant: Tenant):
    """The SDK's first example: `responses.create(model, input)` returns a completed Response
    whose `output_text` is the sandbox's answer, whose usage adds up, and whose cost is charged
    exactly once with nothing left held; its id is `resp_` + the request id."""
    raw = tenant.client().responses.with_raw_response.create(model=MODEL, input=PROMPT)
    response = raw.parse()
    assert raw.status_code == 200
    assert response.id == "resp_" + raw.headers["x-request-id"]
    assert response.object == "response"
    assert response.status == "completed"
    assert response.model == MODEL
    assert len(response.output_text.split(" ")) == SANDBOX_OUTPUT_TOKENS
    assert response.output[0].type == "message" and response.output[0].role == "assistant"
    usage = response.usage
    # The sandbox counts ceil(30 content bytes / 4) + 4 per message + 3 prompt tokens.
    assert usage.input_tokens == 8 + 4 + 3
    assert usage.output_tokens == SANDBOX_OUTPUT_TOKENS
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.input_tokens_details.cached_tokens == 0
    assert usage.output_tokens_details.reasoning_tokens == 0
    after = tenant.gateway.settled_account(tenant.account_id)
    assert after["held_usd"] == "0.000000000"
    cost = flash_cost(usage.input_tokens, usage.output_tokens)
    assert 1_000_000_000 - usd_to_nanos(after["balance_usd"]) == cost
    records = tenant.gateway.usage_records(tenant.account_id, 1)
    assert records[0]["request_id"] == raw.headers["x-request-id"]
    assert usd_to_nanos(records[0]["cost_usd"]) == cost


def test_instructions_and_message_items_with_a_cap(tenant: Tenant):
    """Instructions plus a message item with input_text parts and max_output_tokens below the
    sandbox's length: an `incomplete` Response, reason `max_output_tokens`, 5 output tokens."""
    response = tenant.client().responses.create(
        model=MODEL,
        instructions="Be brief.",
        input=[{"role": "user", "content": [{"type": "input_text", "text": PROMPT}]}],
        max_output_tokens=5,
    )
    assert response.status == "incomplete"
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.usage.output_tokens == 5
    assert len(response.output_text.split(" ")) == 5
    assert response.instructions == "Be brief."


def test_stream_yields_typed_events_ending_in_completed(tenant: Tenant):
    """`stream=True`: the SDK parses every event into its typed class; sequence numbers count
    from 0; the deltas join into the final text; the last event is response.completed carrying
    the whole Response with usage."""
    events = list(tenant.client().responses.create(model=MODEL, input=PROMPT, stream=True))
    types = [event.type for event in events]
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert types[4 : 4 + SANDBOX_OUTPUT_TOKENS] == ["response.output_text.delta"] * SANDBOX_OUTPUT_TOKENS
    assert types[4 + SANDBOX_OUTPUT_TOKENS :] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    text = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    final = events[-1].response
    assert final.status == "completed"
    assert final.output_text == text
    assert final.usage.output_tokens == SANDBOX_OUTPUT_TOKENS
    assert final.usage.total_tokens == final.usage.input_tokens + SANDBOX_OUTPUT_TOKENS
    after = tenant.gateway.settled_account(tenant.account_id)
    assert after["held_usd"] == "0.000000000"
    assert 1_000_000_000 - usd_to_nanos(after["balance_usd"]) == flash_cost(final.usage.input_tokens, SANDBOX_OUTPUT_TOKENS)


def test_test_key_is_served_by_the_sandbox_for_free(gateway):
    """A test key gets the same kind of Response and its wallet never moves."""
    tenant = make_tenant(gateway, kind="test")
    response = tenant.client().responses.create(model=MODEL, input=PROMPT)
    assert response.status == "completed" and response.output_text
    assert gateway.settled_account(tenant.account_id)["balance_usd"] == "1.000000000"


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"previous_response_id": "resp_123"}, "previous_response_id"),
        ({"conversation": "conv_123"}, "conversation"),
        ({"background": True}, "background"),
        ({"tools": [{"type": "web_search"}]}, "tools[0]"),
    ],
)
def test_unsupported_parameters_raise_bad_request(tenant: Tenant, options: dict, param: str):
    """What the gateway cannot honour (it stores nothing, hosts no tools) raises BadRequestError
    with code unsupported_parameter and the exact param, and costs nothing."""
    with pytest.raises(openai.BadRequestError) as raised:
        tenant.client(max_retries=0).responses.create(model=MODEL, input=PROMPT, **options)
    assert raised.value.status_code == 400
    assert raised.value.code == "unsupported_parameter"
    assert raised.value.param == param
    assert tenant.gateway.settled_account(tenant.account_id)["balance_usd"] == "1.000000000"


def test_errors_use_the_sdk_classes(tenant: Tenant):
    """An unknown model is a BadRequestError model_not_found on `model`; a bad key an
    AuthenticationError; an invalid cap a BadRequestError invalid_parameter."""
    with pytest.raises(openai.BadRequestError) as raised:
        tenant.client(max_retries=0).responses.create(model="fikra-flsh", input=PROMPT)
    assert (raised.value.code, raised.value.param) == ("model_not_found", "model")
    with pytest.raises(openai.BadRequestError) as raised:
        tenant.client(max_retries=0).responses.create(model=MODEL, input=PROMPT, max_output_tokens=0)
    assert (raised.value.code, raised.value.param) == ("invalid_parameter", "max_output_tokens")
    with pytest.raises(openai.AuthenticationError) as raised:
        tenant.client(key="fk_live_" + "0" * 32, max_retries=0).responses.create(model=MODEL, input=PROMPT)
    assert raised.value.code == "invalid_api_key"
