/// Used when `config/xerotier.yaml` is not found (a binary run outside the repository).
/// Keep in step with config/xerotier.yaml.
let defaultConfigYAML = """
tiers:
  - name: priority
    priority: 10
    weight: 4
    queue_timeout_ms: 30000
    request_timeout_ms: 300000
  - name: standard
    priority: 5
    weight: 1
    queue_timeout_ms: 30000
    request_timeout_ms: 300000
  - name: batch
    priority: 0
    weight: 0
    queue_timeout_ms: 86400000
    request_timeout_ms: 300000
demo:
  project_slug: demo
  project_name: Demo project
  endpoint_slug: my-endpoint
  model: smollm2-135m-instruct
  tier: standard
"""
