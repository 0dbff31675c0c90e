from django.core.management.base import BaseCommand

from alerts.services import alerts_tick


class Command(BaseCommand):
    help = ("One evaluation tick of every enabled alert rule (what beat runs every "
            "minute): fires, re-notifies and resolves, and enqueues the deliveries. Safe "
            "to run while beat or another copy runs: each transition is taken once.")

    def handle(self, *args, **options):
        result = alerts_tick()
        for rule_id, transition in result.transitions:
            self.stdout.write(f"rule {rule_id}: {transition}")
        self.stdout.write(f"{result.rules} rules evaluated in {result.seconds:.3f}s, "
                          f"{len(result.transitions)} transitions")
