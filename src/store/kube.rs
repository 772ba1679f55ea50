//! Kubernetes Secret JSON/YAML: parse (one, or a List) and write exactly as kubectl does.
