from django.urls import path

from ratelimit import api

urlpatterns = [
    path("limits", api.LimitsApi.as_view(), name="limits"),
    path("limits/policy", api.LimitPolicyApi.as_view(), name="limits-policy"),
    path("limits/changes", api.LimitChangesApi.as_view(), name="limits-changes"),
    path("limits/rejections", api.RejectionsApi.as_view(), name="limits-rejections"),
    path("limits/<int:limit_id>", api.LimitApi.as_view(), name="limit"),
    path("budgets", api.BudgetsApi.as_view(), name="budgets"),
    path("budgets/crossings", api.BudgetCrossingsApi.as_view(), name="budgets-crossings"),
    path("budgets/<int:budget_id>", api.BudgetApi.as_view(), name="budget"),
]
