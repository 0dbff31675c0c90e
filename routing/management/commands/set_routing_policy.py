from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from organizations.errors import OrganizationNotFound
from organizations.selectors import organization_get_by_slug
from organizations.services import Actor
from routing.calibration import (
    CalibrationInvalid,
    calibrate,
    samples_from_prompts,
    samples_from_records,
)
from routing.errors import RoutingPolicyInvalid
from routing.models import RoutingPolicy
from routing.policies import routing_policy_set
from routing.selectors import policy_snapshot, routing_table_for_org
from routing.table import TIERS


def _fraction(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise CommandError(f"{text!r} is not a number") from None


class Command(BaseCommand):
    help = ("Set an organization's smart routing policy: the mode, each tier's model (a "
            "model or @ROUTE), the thresholds between tiers, the models it also applies to; "
            "or calibrate the thresholds for a share of complex requests.")

    def add_arguments(self, parser):
        parser.add_argument("--org", required=True, help="organization slug")
        parser.add_argument("--mode", choices=RoutingPolicy.Mode.values)
        parser.add_argument("--tier", action="append", default=[], metavar="TIER=MODEL",
                            help="simple=, standard= or complex= a model of the model table "
                                 "or @ROUTE, a route of the organization; repeat")
        thresholds = parser.add_mutually_exclusive_group()
        thresholds.add_argument("--threshold", type=_fraction, metavar="X",
                                help="the score from which a request is complex")
        thresholds.add_argument("--thresholds", metavar="A,B",
                                help="simple below A, complex from B (0 <= A <= B <= 1)")
        thresholds.add_argument("--calibrate-complex-share", type=_fraction, metavar="SHARE",
                                help="find the thresholds that send SHARE of requests to "
                                     "the complex tier")
        parser.add_argument("--from-records", type=int, default=1000, metavar="N",
                            help="calibrate from the last N scored request records "
                                 "(default 1000)")
        parser.add_argument("--prompts", type=Path, metavar="FILE.jsonl",
                            help="calibrate from a file of request bodies instead")
        parser.add_argument("--apply-to", action="append", metavar="MODEL",
                            help="a model whose requests may go down a tier too; repeat. "
                                 "--apply-to '' clears the list")

    def handle(self, *args, org: str, mode, tier, threshold, thresholds,
               calibrate_complex_share, from_records, prompts, apply_to, **options):
        try:
            organization = organization_get_by_slug(slug=org)
        except OrganizationNotFound as exc:
            raise CommandError(f"No organization with slug {org!r}") from exc
        tiers = {}
        for text in tier:
            name, _, model = text.partition("=")
            if name not in TIERS or not model:
                raise CommandError(f"--tier {text!r}: write simple=MODEL, standard=MODEL or "
                                   "complex=MODEL")
            tiers[f"{name}_model"] = model
        values: dict = {"mode": mode, **tiers}
        if threshold is not None:
            current = RoutingPolicy.objects.filter(organization=organization).first()
            below = current.simple_below if current else None
            values["complex_from"] = threshold
            if below is not None and below > threshold:
                values["simple_below"] = threshold
        if thresholds is not None:
            parts = thresholds.split(",")
            if len(parts) != 2:
                raise CommandError("--thresholds takes two numbers: A,B")
            values["simple_below"], values["complex_from"] = map(_fraction, parts)
        if apply_to is not None:
            values["apply_to"] = [name for name in apply_to if name]
        actor = Actor(label="manage.py set_routing_policy")
        try:
            policy, changed = routing_policy_set(organization=organization, actor=actor,
                                                 **values)
            if calibrate_complex_share is not None:
                policy, changed = self._calibrate(policy, calibrate_complex_share,
                                                  from_records, prompts, actor)
        except RoutingPolicyInvalid as exc:
            raise CommandError(str(exc)) from exc
        except CalibrationInvalid as exc:
            raise CommandError(str(exc)) from exc
        apply = ", ".join(policy.apply_to) or "-"
        self.stdout.write(
            f"{organization.slug}: routing {policy.mode}; simple={policy.simple_model} "
            f"(below {policy.simple_below:g}), standard={policy.standard_model}, "
            f"complex={policy.complex_model} (from {policy.complex_from:g}); also for: "
            f"{apply}; generation {policy.generation}{'' if changed else ' (unchanged)'}")

    def _calibrate(self, policy: RoutingPolicy, share: float, count: int,
                   prompts: Path | None, actor: Actor) -> tuple[RoutingPolicy, bool]:
        if prompts is not None:
            samples = samples_from_prompts(prompts)
            source = str(prompts)
        else:
            samples = samples_from_records(organization_id=policy.organization_id,
                                           count=count)
            source = f"the last {len(samples)} scored requests"
        table = routing_table_for_org(organization_id=policy.organization_id)
        snapshot = policy_snapshot(policy, table.routes)
        found = calibrate(samples=samples, complex_share=share,
                          tier_models=[t.priced_as for t in snapshot.tiers])
        self.stdout.write(f"calibrated on {source} ({found.samples}): simple below "
                          f"{found.simple_below:.3f}, complex from {found.complex_from:.3f}")
        for tier in TIERS:
            self.stdout.write(f"  {tier:<9}{found.shares[tier]:6.1%}")
        if found.saving is None:
            self.stdout.write("  projected saving: unknown (a tier's model or the tokens "
                              "have no price)")
        else:
            self.stdout.write(f"  projected saving: {found.saving:.1%} (${found.routed_cost:.4f}"
                              f" instead of ${found.baseline_cost:.4f} all on the complex tier)")
        return routing_policy_set(organization=policy.organization, actor=actor,
                                  simple_below=found.simple_below,
                                  complex_from=found.complex_from)
