"""The checks a schema cannot make, one module per section of the rules file (`server`,
`audit`, `state`, `secrets`, `smtp`, `prefect`, `endpoints`, `delivery`, `reload`,
`event_types`, `automations` with their `actions`, `slas`), and of what several sections
share (`tls` for a `tls:` option, `attributes` for matchers and template fields, `conditions`
for `when:`), on the shared `core`: each reports every problem at its place and builds its
part of the Config from what is sound."""
