"""schemathesis over the management API's OpenAPI schema (/api/schema/), against a
real gateway, with an organization's admin-scoped key: no server error, and every
answer (status, content type, body) as the schema describes it.

Data the schema allows may still be refused with a 400 (rules a schema cannot say:
a provider name's characters, `start` with `end`, a webhook's scheme), so schemathesis's
positive-data-acceptance check is left out; every other default check runs.

Bounded for `make test`: BADINPUT_SCHEMA_EXAMPLES examples per operation and mode
(default 3; 30 or more for a long run), positive (data the schema allows) and
negative (data it does not, which must be refused).
"""

import os

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    negative_data_rejection,
    positive_data_acceptance,
)

from organizations.models import ApiKey
from organizations.services import api_key_create

EXAMPLES = int(os.environ.get("BADINPUT_SCHEMA_EXAMPLES", "3"))


def test_it_answers_every_operation_as_its_schema_says(gateway, live_world):
    key = api_key_create(organization=live_world.a.org, name="schemathesis",
                         scope=ApiKey.Scope.ADMIN)
    headers = {"Authorization": f"Bearer {key.raw_key}"}
    session = requests.Session()
    document = session.get(f"{gateway.url}/api/schema/?format=json", headers=headers,
                           timeout=10).json()
    schema = schemathesis.openapi.from_dict(document)
    counts: dict[str, int] = {}
    failures: list[str] = []

    def fuzz(operation, mode: GenerationMode) -> None:
        label = f"{operation.method.upper()} {operation.path} {mode.value}"

        @settings(max_examples=EXAMPLES, deadline=None, database=None,
                  phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case) -> None:
            # The key itself is not the fuzzer's to revoke: the rest would be 401s.
            if (case.path_parameters or {}).get("key_id") == key.api_key.pk:
                return
            counts[label] = counts.get(label, 0) + 1
            response = case.call(base_url=gateway.url, session=session, headers=headers)
            excluded = [positive_data_acceptance]
            if any(value == "" for value in (case.query or {}).values()):
                # An empty query parameter counts as not given (DRF reads query strings
                # as forms): `?end=` is the default range, not a malformed date.
                excluded.append(negative_data_rejection)
            try:
                case.validate_response(response, excluded_checks=excluded)
            except BaseException as failed:  # schemathesis raises its failures as a group
                failures.append(f"{label}: {response.status_code} "
                                f"{response.text[:200]!r}: {failed}"[:1500])

        run()

    for result in schema.get_all_operations():
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fuzz(result.ok(), mode)

    print(f"schemathesis: {sum(counts.values())} cases over {len(counts)} operation "
          f"modes, {len(failures)} failures")
    assert not failures, "\n".join(failures[:30])
