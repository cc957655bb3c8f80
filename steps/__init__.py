"""Pipeline steps: thin glue between the contracts and the library code."""
