"""The way back: results from the analysis server filed under the original patient and study.

`identity` is what the worker records, per study, when it de-identifies (encrypted in the
vault); `restore` turns a result that names only pseudonyms into one that names the originals,
or refuses it with a reason code (fail closed: nothing goes to PACS that cannot be tied to
exactly one original study).
"""
