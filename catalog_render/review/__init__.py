"""The review page: ``catalog-render review OUTPUT_URI`` serves a local web app where people approve
or reject renders.

* :mod:`.data` reads an output (manifest, current view, feedback) through
  :mod:`catalog_render.storage` and answers page queries (filters, sort, paging) with pyarrow
  compute on the columns;
* :mod:`.images` serves an image only by a manifest row's render_key (no path from a URL ever
  reaches the file system or S3);
* :mod:`.verdicts` stores verdicts and undoes them through :func:`catalog_render.feedback.record_verdicts`
  (the write path of ``feedback import``) and keeps ``current.parquet`` up to date;
* :mod:`.app` is the Starlette application (routes, CSRF, error pages), :mod:`.server` runs it
  with uvicorn on 127.0.0.1.
"""
