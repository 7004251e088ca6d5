{{/* The labels manifests/ gives every operator object (kustomize adds part-of). */}}
{{- define "servedmodel.labels" -}}
app.kubernetes.io/component: operator
app.kubernetes.io/name: servedmodel-operator
app.kubernetes.io/part-of: servedmodel
{{- end }}

{{- define "servedmodel.operatorImage" -}}
{{ .Values.operator.image.repository }}:{{ .Values.operator.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "servedmodel.exporterImage" -}}
{{ .Values.exporter.image.repository }}:{{ .Values.exporter.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "servedmodel.globs" -}}
{{- join "," . }}
{{- end }}

{{/* A map of labels as the operator's flags take them: k=v,k2=v2 (sorted by key). */}}
{{- define "servedmodel.labelPairs" -}}
{{- $pairs := list }}
{{- range $k, $v := . }}{{ $pairs = append $pairs (printf "%s=%s" $k $v) }}{{ end }}
{{- join "," $pairs }}
{{- end }}

{{/*
Exactly what servedmodel-operator calls, no more (a test fails on any wildcard):
- it watches ServedModels and ModelServers and patches their status, never their spec;
- it server-side-applies its children (an apply that creates needs create too) and watches them;
- it reads exporter pods for their termination messages; it posts events;
- it reads (get only) the credentials Secrets ServedModels name, to check they exist;
- it reads (get only) the claims and ServiceAccounts a ServedModel's pods would use (the
  policy's opt-in), and an object it is about to create (never take over someone else's).
The same rules as manifests/base/rbac.yaml's ClusterRole (a test compares them).
*/}}
{{- define "servedmodel.rules" -}}
- apiGroups: [serving.servedmodel.io]
  resources: [servedmodels, modelservers]
  verbs: [list, watch]
- apiGroups: [serving.servedmodel.io]
  resources: [servedmodels/status, modelservers/status]
  verbs: [patch]
- apiGroups: [serving.servedmodel.io]
  # ownerReferences with blockOwnerDeletion need this where the
  # OwnerReferencesPermissionEnforcement admission plugin is on.
  resources: [servedmodels/finalizers, modelservers/finalizers]
  verbs: [update]
- apiGroups: [apps]
  # delete: a finished rollout's canary Deployment, once spec.rollout goes.
  resources: [deployments]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  # delete: a finished rollout's canary ConfigMap and Services, once spec.rollout goes.
  resources: [configmaps, services]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, patch]
- apiGroups: [""]
  resources: [persistentvolumeclaims, serviceaccounts]
  verbs: [get]
- apiGroups: [gateway.networking.k8s.io]
  # A rollout's traffic split (spec.rollout.parentRefs); deleted once spec.rollout goes.
  resources: [httproutes, grpcroutes]
  verbs: [get, create, patch, delete]
- apiGroups: [autoscaling]
  # spec.server.autoscaling; deleted again when that field goes.
  resources: [horizontalpodautoscalers]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [policy]
  # spec.server.disruptionBudget: one per Deployment above one pod; deleted when not wanted.
  resources: [poddisruptionbudgets]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [networking.k8s.io]
  # spec.server.networkPolicy (or the policy's default); deleted when turned off.
  resources: [networkpolicies]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create]
- apiGroups: [""]
  # Only to check that an s3:// or gs:// source's credentials Secret and keys exist before
  # starting an export. Never listed or watched; values are discarded on receipt.
  resources: [secrets]
  verbs: [get]
{{- end }}
