// Writes one <dashboard>.check.ts per dashboard given on the command line (so the compiler's
// messages name the dashboard): the dashboard as an object literal typed with
// Grafana's dashboard schema, and each panel's options and custom field config typed with its
// panel plugin's schema (all fields optional, as Grafana fills defaults when it loads a
// dashboard; enum values as their strings, as they appear in dashboard JSON). The TypeScript
// compiler then rejects unknown keys and values of the wrong type or outside an enum.
"use strict";
const fs = require("fs");
const path = require("path");

// Panel types the dashboards use -> the module of their schema.
const PANELS = {
  timeseries: "@grafana/schema/dist/types/raw/composable/timeseries/panelcfg/x/types.gen",
  piechart: "@grafana/schema/dist/types/raw/composable/piechart/panelcfg/x/types.gen",
};

const HEAD = [
  'import type { Dashboard } from "@grafana/schema/dist/types/raw/dashboard/x/types.gen";',
  ...Object.entries(PANELS).map(([name, mod]) => `import type * as ${name} from "${mod}";`),
  "type Loose<T> = T extends string ? `${T}` : T extends object ? { [K in keyof T]?: Loose<T[K]> } : T;",
];
for (const old of fs.readdirSync(".").filter((f) => f.endsWith(".check.ts"))) {
  fs.unlinkSync(old);
}
process.argv.slice(2).forEach((file, n) => {
  const d = JSON.parse(fs.readFileSync(file, "utf8"));
  const out = [...HEAD];
  out.push(`export const dashboard: Dashboard = ${JSON.stringify(d, null, 1)};`);
  (d.panels || []).forEach((p, i) => {
    if (!(p.type in PANELS)) {
      throw new Error(`${file}: panel ${i} has type ${p.type}, which this check does not know`);
    }
    if (p.options !== undefined) {
      out.push(`export const dashboard_${i}_options: Loose<${p.type}.Options> = ${JSON.stringify(p.options)};`);
    }
    const custom = p.fieldConfig && p.fieldConfig.defaults && p.fieldConfig.defaults.custom;
    if (custom !== undefined) {
      out.push(`export const dashboard_${i}_custom: Loose<${p.type}.FieldConfig> = ${JSON.stringify(custom)};`);
    }
  });
  let name = `${path.basename(file, ".json")}.check.ts`;
  if (fs.existsSync(name)) {
    name = `${n}-${name}`;
  }
  fs.writeFileSync(name, out.join("\n") + "\n");
});
