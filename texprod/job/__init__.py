"""The job: the spec, the texture field it describes, the plan, the one pipeline (stripes,
spool, assembly, proof, preflight, upload) and who works the stripes (threads, Dask).

It imports press, models, engine and `storage`; only the CLI and flows import it.
"""
