#!/usr/bin/env node
// The IAM policy evaluator of scripts/iam_check.py: @cloud-copilot/iam-simulate (AGPL-3.0, a test-time tool
// that is never shipped; see README.md "Tools"). It evaluates wildcards, resource ARNs and every condition
// operator as IAM does, and rejects an action, a resource type or a condition key that the action does not
// have, so a request modelled wrongly is an error, not a silent "allowed".
//
// stdin:  {"account": "123456789012", "requests": [{"id", "principal", "action", "resource",
//          "context": {key: string | string[]}, "policies": [{"name", "policy"}]}]}
// stdout: [{"id", "result": "Allowed" | "ImplicitlyDenied" | "ExplicitlyDenied" | "Error",
//           "statements": [Sid of each decisive statement], "error": "..."}]
import { runSimulation } from '@cloud-copilot/iam-simulate'

const chunks = []
for await (const chunk of process.stdin) chunks.push(chunk)
const input = JSON.parse(Buffer.concat(chunks).toString('utf8'))

const sids = (statements) =>
  (statements || []).map((s) => s.statement?.sid?.() ?? s.statement?.Sid ?? s.explain?.identifier ?? '?')

const out = []
for (const r of input.requests) {
  const simulation = {
    identityPolicies: r.policies,
    serviceControlPolicies: [],
    resourceControlPolicies: [],
    request: {
      action: r.action,
      principal: r.principal,
      resource: { accountId: input.account, resource: r.resource },
      contextVariables: r.context || {},
    },
  }
  let response
  try {
    response = await runSimulation(simulation, {})
  } catch (e) {
    out.push({ id: r.id, result: 'Error', error: String(e?.stack || e) })
    continue
  }
  if (response.resultType === 'error') {
    out.push({ id: r.id, result: 'Error', error: JSON.stringify(response.errors) })
    continue
  }
  const analysis = response.result?.analysis?.identityAnalysis
  out.push({
    id: r.id,
    result: response.overallResult,
    statements: sids(
      response.overallResult === 'ExplicitlyDenied' ? analysis?.denyStatements : analysis?.allowStatements,
    ),
  })
}
process.stdout.write(JSON.stringify(out))
