from django.contrib import admin
from django.http import HttpRequest

from pipeline.models import DeadLetter


@admin.register(DeadLetter)
class DeadLetterAdmin(admin.ModelAdmin):
    """Read-only: what the pipeline could not store, for the operator to look into (the
    event may hold a tenant's content: this is the operator's view only)."""

    list_display = ["created_at", "kind", "error", "size"]
    list_filter = ["kind", "error"]
    readonly_fields = ["created_at", "kind", "error", "event_text"]
    exclude = ["event"]

    @admin.display(description="bytes")
    def size(self, letter: DeadLetter) -> int:
        return len(letter.event)

    @admin.display(description="event")
    def event_text(self, letter: DeadLetter) -> str:
        return bytes(letter.event).decode("utf-8", errors="replace")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False
