from django.urls import path

from alerts import api

urlpatterns = [
    path("alerts/rules", api.RulesApi.as_view(), name="alert-rules"),
    path("alerts/rules/<int:rule_id>", api.RuleApi.as_view(), name="alert-rule"),
    path("alerts/channels", api.ChannelsApi.as_view(), name="alert-channels"),
    path("alerts/channels/<int:channel_id>", api.ChannelApi.as_view(), name="alert-channel"),
    path("alerts/channels/<int:channel_id>/test", api.TestApi.as_view(),
         name="alert-channel-test"),
    path("alerts/events", api.EventsApi.as_view(), name="alert-events"),
]
