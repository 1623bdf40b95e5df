#!/bin/sh
# Regenerates the JSON Schemas in this directory from the TypeScript types that Grafana
# publishes in the @grafana/schema npm package. Run it (needs node and npm) when bumping
# GRAFANA_SCHEMA; the test suite itself only needs Python's jsonschema.
#
#   dashboards/.schema/generate.sh
#
# The directory name starts with a dot because Grafana's file provisioner skips dot-directories:
# mounting dashboards/ as a dashboard folder never tries to load a schema as a dashboard.
set -eu

GRAFANA_SCHEMA=13.2.3           # @grafana/schema, the types of Grafana 13.2 (schemaVersion 39+)
GENERATOR=2.10.0                # ts-json-schema-generator
TYPESCRIPT=6.0.3                # the compiler the generator runs on

here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

npm --prefix "$work" install --no-save --no-audit --no-fund --loglevel=error \
  "@grafana/schema@$GRAFANA_SCHEMA" "ts-json-schema-generator@$GENERATOR" "typescript@$TYPESCRIPT"

types="$work/node_modules/@grafana/schema/dist/types/raw"
gen() { # gen TYPES_FILE TYPE_NAME OUTPUT
  "$work/node_modules/.bin/ts-json-schema-generator" --no-type-check \
    --path "$1" --type "$2" --out "$3"
}

# The classic dashboard JSON model (what Grafana exports and imports, schemaVersion 39+).
gen "$types/dashboard/x/types.gen.d.ts" Dashboard "$here/dashboard.schema.json"

# Panel plugins' options and fieldConfig.defaults.custom, for the panel types we use.
for panel in timeseries stat bargauge table heatmap; do
  gen "$types/composable/$panel/panelcfg/x/types.gen.d.ts" Options \
    "$here/panels/$panel.options.schema.json"
done
for panel in timeseries table heatmap; do
  gen "$types/composable/$panel/panelcfg/x/types.gen.d.ts" FieldConfig \
    "$here/panels/$panel.fieldconfig.schema.json"
done

printf '{"@grafana/schema": "%s", "ts-json-schema-generator": "%s", "typescript": "%s"}\n' \
  "$GRAFANA_SCHEMA" "$GENERATOR" "$TYPESCRIPT" >"$here/versions.json"
