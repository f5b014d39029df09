/**
 * deploy/grafana/agentbox-dashboard.json stays true to the daemon: it is valid JSON, its panel ids
 * are unique, every query goes through the `${DS_PROMETHEUS}` input, and every agentbox_* metric an
 * expression (or a template variable) names is a family the daemon's Metrics registry exports
 * (a histogram's _bucket, _sum and _count included). Renaming a metric breaks this test, not the
 * operator's dashboard.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Metrics } from '../../src/observability/metrics.js';

/** dist/test/unit/grafana-dashboard.test.js -> the repository root. */
const root = fileURLToPath(new URL('../../../', import.meta.url));
const DASHBOARD = `${root}deploy/grafana/agentbox-dashboard.json`;

interface Panel {
  id?: number;
  type?: string;
  title?: string;
  datasource?: { type?: string; uid?: string };
  targets?: { expr?: string; datasource?: { uid?: string } }[];
  panels?: Panel[];
}

/** Every panel, rows' nested panels included. */
function allPanels(panels: Panel[]): Panel[] {
  return panels.flatMap((p) => [p, ...allPanels(p.panels ?? [])]);
}

/** The metric names a dashboard can name: each family, and a histogram's or summary's series. */
async function exportedNames(): Promise<Set<string>> {
  const metrics = new Metrics(() => ({}));
  const names = new Set<string>();
  for (const f of await metrics.registry.getMetricsAsJSON()) {
    names.add(f.name);
    if (String(f.type) === 'histogram' || String(f.type) === 'summary') for (const s of ['_bucket', '_sum', '_count']) names.add(f.name + s);
  }
  return names;
}

/** The agentbox_* names an expression uses that the registry does not export. */
function unknownNames(expr: string, exported: Set<string>): string[] {
  const out: string[] = [];
  for (const m of expr.matchAll(/agentbox_[a-z0-9_]+/g)) {
    const name = m[0];
    const family = name.replace(/_(bucket|sum|count)$/, '');
    if (!exported.has(name) || (name !== family && !exported.has(family))) out.push(name);
  }
  return out;
}

/** Every query expression of the dashboard: panel targets and template variables. */
function expressions(dash: { panels: Panel[]; templating?: { list?: { query?: string | { query?: string }; definition?: string }[] } }): { where: string; expr: string }[] {
  const out: { where: string; expr: string }[] = [];
  for (const p of allPanels(dash.panels)) for (const t of p.targets ?? []) if (t.expr) out.push({ where: `panel ${p.id} "${p.title}"`, expr: t.expr });
  for (const v of dash.templating?.list ?? []) {
    const q = typeof v.query === 'string' ? v.query : v.query?.query;
    if (q) out.push({ where: 'template variable', expr: q });
  }
  return out;
}

test('the Grafana dashboard: valid JSON, unique panel ids, the DS_PROMETHEUS input, and only metrics the daemon exports', async () => {
  const text = readFileSync(DASHBOARD, 'utf8');
  const dash = JSON.parse(text) as { __inputs?: { name: string; type: string; pluginId: string }[]; panels: Panel[]; title?: string; uid?: string; schemaVersion?: number; templating?: { list?: { query?: string | { query?: string } }[] } };
  assert.ok(dash.title && dash.uid, 'a title and a uid');
  assert.ok((dash.schemaVersion ?? 0) >= 36, 'a Grafana 10+ model');
  assert.deepEqual(dash.__inputs?.map((i) => [i.name, i.type, i.pluginId]), [['DS_PROMETHEUS', 'datasource', 'prometheus']]);

  const panels = allPanels(dash.panels);
  const ids = panels.map((p) => p.id);
  assert.ok(ids.every((id) => typeof id === 'number'), 'every panel has an id');
  assert.equal(new Set(ids).size, ids.length, `duplicate panel ids: ${ids.join(',')}`);
  for (const p of panels.filter((x) => x.type !== 'row')) {
    assert.equal(p.datasource?.uid, '${DS_PROMETHEUS}', `panel ${p.id} "${p.title}" uses the DS_PROMETHEUS input`);
    assert.ok((p.targets ?? []).length > 0, `panel ${p.id} "${p.title}" has a query`);
    for (const t of p.targets ?? []) assert.equal(t.datasource?.uid ?? '${DS_PROMETHEUS}', '${DS_PROMETHEUS}');
  }

  const exported = await exportedNames();
  const exprs = expressions(dash);
  assert.ok(exprs.length >= 15, `expressions: ${exprs.length}`);
  const unknown = exprs.flatMap((e) => unknownNames(e.expr, exported).map((n) => `${e.where}: ${n}`));
  assert.deepEqual(unknown, [], 'the dashboard names metrics the daemon does not export');
  const used = new Set(exprs.flatMap((e) => [...e.expr.matchAll(/agentbox_[a-z0-9_]+/g)].map((m) => m[0].replace(/_(bucket|sum|count)$/, ''))));
  // The families issue 19 asked a panel for.
  for (const f of ['agentbox_sandboxes_active', 'agentbox_sandbox_create_seconds', 'agentbox_exec_seconds', 'agentbox_execs_total', 'agentbox_pool_available', 'agentbox_egress_connections_total', 'agentbox_egress_bytes_total', 'agentbox_http_request_seconds', 'agentbox_sandbox_cpu_percent', 'agentbox_sandbox_memory_bytes']) {
    assert.ok(used.has(f), `no panel shows ${f}`);
  }
});

test('the check catches a metric that does not exist (and a histogram suffix on a counter)', async () => {
  const exported = await exportedNames();
  assert.deepEqual(unknownNames('rate(agentbox_sandboxes_created_total[5m])', exported), []);
  assert.deepEqual(unknownNames('histogram_quantile(0.95, rate(agentbox_exec_seconds_bucket[5m]))', exported), []);
  assert.deepEqual(unknownNames('sum(rate(agentbox_bogus_total[5m])) / agentbox_execs_total_count', exported), ['agentbox_bogus_total', 'agentbox_execs_total_count']);
});
