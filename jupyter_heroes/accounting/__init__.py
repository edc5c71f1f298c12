"""Cost management (D3.1 4.8, 4.9): budgets, the usage ledger, reports.

- :mod:`.budgets`: ``create_budget``, ``update_budget``, ``list_budgets``, ``budget_status``,
  ``add_credit``, ``reserve`` (atomic, at submission), ``settle`` / ``release`` (at the end),
  ``exhausted_actions`` (what to hold or cancel), ``reservation_totals`` (audit); ``BudgetExceeded``.
- :mod:`.ledger`: ``record_job`` / ``record_instance`` (one idempotent record per finished job),
  ``instance_cost``, ``settle_from_ledger``, ``records``.
- :mod:`.reports`: ``usage_report``, ``vendor_revenue``, ``offer_usage``, ``version_usage``,
  ``records_csv`` / ``read_records_csv``, ``report_csv`` and plotly figure builders.
- :mod:`.money`: integer cents, ISO 4217 codes, conversion.
"""
