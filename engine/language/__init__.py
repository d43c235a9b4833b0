"""The strategy language: YAML loading, schemas, metrics, functions, expressions, compiler."""
