{{/*
The chart name, or nameOverride; cut to 63 characters (a DNS label).
*/}}
{{- define "carpool.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of the chart's resources: "<release>-<name>", or the release name when it already
contains the name, or fullnameOverride. Cut to 63 characters, the limit of some name fields.
*/}}
{{- define "carpool.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
"<chart>-<version>", the value of the helm.sh/chart label.
*/}}
{{- define "carpool.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The recommended labels of the operator and its resources.
*/}}
{{- define "carpool.labels" -}}
{{ include "carpool.componentLabels" (dict "context" . "component" "operator") }}
{{- end }}

{{/*
The recommended labels of a resource of the chart that belongs to another component.
Call with (dict "context" $ "component" "serving").
*/}}
{{- define "carpool.componentLabels" -}}
helm.sh/chart: {{ include "carpool.chart" .context }}
app.kubernetes.io/name: {{ include "carpool.name" .context }}
app.kubernetes.io/instance: {{ .context.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- if .context.Chart.AppVersion }}
app.kubernetes.io/version: {{ .context.Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/part-of: carpool
app.kubernetes.io/managed-by: {{ .context.Release.Service }}
{{- end }}

{{/*
The labels that select the operator pod: stable across upgrades (never the chart version).
*/}}
{{- define "carpool.selectorLabels" -}}
app.kubernetes.io/name: {{ include "carpool.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/*
The ServiceAccount the operator runs as.
*/}}
{{- define "carpool.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "carpool.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
An image reference from {repository, tag, digest}: the digest wins, the tag defaults to appVersion.
Call with (dict "image" .Values.image "context" $).
*/}}
{{- define "carpool.image" -}}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository (default .context.Chart.AppVersion .image.tag) }}
{{- end }}
{{- end }}

{{/*
The GPU serving image: like carpool.image, but an empty tag means "<appVersion>-cuda".
*/}}
{{- define "carpool.gpuImage" -}}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository (default (printf "%s-cuda" .context.Chart.AppVersion) .image.tag) }}
{{- end }}
{{- end }}

{{/*
The label the operator puts on every serving pod, naming its BatchingPolicy.
*/}}
{{- define "carpool.policyLabel" -}}
carpool.dev/policy
{{- end }}

{{/*
The name of the serving container's port, in the pods and Services the operator creates.
*/}}
{{- define "carpool.servingPortName" -}}
http
{{- end }}

{{/*
Relabelling that copies the pod's carpool.dev/policy label into a `policy` label on every series:
the operator's autoscaler sums carpool_queue_size by it.
*/}}
{{- define "carpool.policyRelabeling" -}}
- sourceLabels: [__meta_kubernetes_pod_label_carpool_dev_policy]
  targetLabel: policy
  action: replace
{{- end }}
