"""Stage 3, judging a model: running it over images (``infer``), the confidences CSVs
(``confidences``), SmartCam's contract check (``contract``), metrics (``metrics``), the reports
(``report``, ``report_page``, ``report_plots``, ``html_report``), label review (``review``),
the decisions a page takes and downloads for relabel.py (``decisions``) and the queue of
unlabelled thumbnails, least sure first (``queue``).

May import: ``opssat.core``, ``opssat.onboard``, ``opssat.data``.
"""
