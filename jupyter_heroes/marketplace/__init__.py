"""The marketplace (D3.1 3.1.4, 3.2, 4.5, 4.9): vendors publish, client organizations enable.

- :mod:`.offers`: resource offers (a provider's cluster queue at an "A x + B" price), versioned;
  ``publish_offer``, ``update_offer``, ``withdraw_offer``, ``get_offer``, ``list_offers``,
  ``offer_history``, ``version_at``, ``enable_offer``, ``disable_offer``, ``enabled_offers``,
  ``enabled_offer_for``, ``offer_candidates`` (for the decision module) and ``pin_job`` (for the
  workflow engine, at submission).
- :mod:`.applications`: applications (image, parameter schema, licence price), versioned, with the
  same publish / enable / pin rules.
- :mod:`.common`: visibility, availability windows, price validation shared by both.
- :mod:`.errors`: ``InvalidInput`` (400), ``NotFound`` (404), ``Conflict`` (409), ``NotAllowed``
  (403), each with ``message``, ``reason`` and ``status`` for the REST layer.
- :mod:`.sample`: a small sample marketplace for demos and tests.

Models live in :mod:`jupyter_heroes.orm_market`.
"""
