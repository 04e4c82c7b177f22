{{/* Chart name, truncated to 63 characters (DNS label). */}}
{{- define "herald.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: "<release>-<chart>", or the release name when it already contains the chart name.
Truncated to 52 characters so suffixes like "-operator-crds" still fit in 63.
*/}}
{{- define "herald.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "herald.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "herald.labels" -}}
helm.sh/chart: {{ include "herald.chart" . }}
{{ include "herald.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: herald
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Pod labels beyond the selector: podLabels and commonLabels (podLabels win). */}}
{{- define "herald.podLabels" -}}
{{- with merge (deepCopy (.Values.podLabels | default dict)) (.Values.commonLabels | default dict) }}
{{- toYaml . }}
{{- end }}
{{- end }}

{{/* Labels that select the pods. */}}
{{- define "herald.selectorLabels" -}}
app.kubernetes.io/name: {{ include "herald.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The operator's ServiceAccount: serviceAccount.name, or "<fullname>-operator". */}}
{{- define "herald.operatorServiceAccount" -}}
{{- .Values.serviceAccount.name | default (printf "%s-operator" (include "herald.fullname" .)) }}
{{- end }}

{{/* The callback Deployment's ServiceAccount: serviceAccount.callbackName, or "<fullname>-callback". */}}
{{- define "herald.callbackServiceAccount" -}}
{{- .Values.serviceAccount.callbackName | default (printf "%s-callback" (include "herald.fullname" .)) }}
{{- end }}

{{/* Labels that select the operator's pods (which also run the callback receiver unless
callback.separateDeployment). */}}
{{- define "herald.operatorSelectorLabels" -}}
{{ include "herald.selectorLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Labels that select the callback receiver's own pods (callback.separateDeployment). */}}
{{- define "herald.callbackSelectorLabels" -}}
{{ include "herald.selectorLabels" . }}
app.kubernetes.io/component: callback
{{- end }}

{{/* The pods that receive callbacks: the operator's (sidecar) or the callback Deployment's. */}}
{{- define "herald.callbackPodSelectorLabels" -}}
{{- if .Values.callback.separateDeployment }}
{{- include "herald.callbackSelectorLabels" . }}
{{- else }}
{{- include "herald.operatorSelectorLabels" . }}
{{- end }}
{{- end }}

{{/* The Secret holding the keys: existingSecret, or the generated one. */}}
{{- define "herald.secretName" -}}
{{- if .Values.secret.existingSecret }}
{{- .Values.secret.existingSecret }}
{{- else }}
{{- include "herald.fullname" . }}-keys
{{- end }}
{{- end }}

{{- define "herald.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "herald.callbackUrl" -}}
{{- if .Values.callbackUrl }}
{{- .Values.callbackUrl }}
{{- else }}
{{- printf "http://%s-callback.%s.svc:%d" (include "herald.fullname" .) .Release.Namespace (int .Values.ports.callback) }}
{{- end }}
{{- end }}

{{/* Names of targets that send an auth header, sorted. */}}
{{- define "herald.authTargets" -}}
{{- $names := list }}
{{- range $name, $target := .Values.targets }}
{{- if $target.authHeaderName }}
{{- $names = append $names $name }}
{{- end }}
{{- end }}
{{- $names | sortAlpha | toJson }}
{{- end }}

{{/*
The generated Secret's data (base64 values), as YAML. Existing values are looked up and
kept, so `helm upgrade` never rotates the keys; `helm template` (no cluster) cannot look
up and renders fresh random values.
*/}}
{{- define "herald.secretData" -}}
{{- $existing := dict }}
{{- $found := lookup "v1" "Secret" .Release.Namespace (include "herald.secretName" .) }}
{{- if and $found $found.data }}
{{- $existing = $found.data }}
{{- end }}
{{- $data := dict }}
{{- /* Standard Webhooks form: "whsec_" + base64 of 32 random bytes (randBytes returns base64). */}}
{{- $_ := set $data "signing-key" (get $existing "signing-key" | default (printf "whsec_%s" (randBytes 32) | b64enc)) }}
{{- $_ := set $data "callback-key" (get $existing "callback-key" | default (randAlphaNum 64 | b64enc)) }}
{{- if .Values.callbackSharedSecret.enabled }}
{{- $value := .Values.callbackSharedSecret.value | default "" }}
{{- $_ := set $data "callback-shared-secret" (ternary ($value | b64enc) (get $existing "callback-shared-secret" | default (randAlphaNum 64 | b64enc)) (ne $value "")) }}
{{- end }}
{{- range $name := include "herald.authTargets" . | fromJsonArray }}
{{- $key := printf "target-%s-auth" $name }}
{{- $value := get $.Values.secret.targetAuthValues $name | default "" }}
{{- $_ := set $data $key (ternary ($value | b64enc) (get $existing $key | default (randAlphaNum 48 | b64enc)) (ne $value "")) }}
{{- end }}
{{- toYaml $data }}
{{- end }}

{{/* Checks the schema cannot express. */}}
{{- define "herald.validate" -}}
{{- if lt (float64 .Values.config.maxBackoffSeconds) (float64 .Values.config.backoffSeconds) }}
{{- fail (printf "config.maxBackoffSeconds (%v) must be >= config.backoffSeconds (%v)" .Values.config.maxBackoffSeconds .Values.config.backoffSeconds) }}
{{- end }}
{{- if and (not .Values.rbac.clusterWide) (empty .Values.watchNamespaces) }}
{{- fail "watchNamespaces must list at least one namespace when rbac.clusterWide is false" }}
{{- end }}
{{- if and .Values.rbac.clusterWide .Values.watchNamespaces }}
{{- fail "watchNamespaces is only used with rbac.clusterWide=false (with true, all namespaces are watched)" }}
{{- end }}
{{- /* After SIGTERM the operator finishes its in-flight webhook requests (each bounded by its
target's timeoutSeconds) and records their outcome before it exits. */}}
{{- $longest := 0.0 }}
{{- range $name, $target := .Values.targets }}
{{- $longest = maxf $longest (float64 ($target.timeoutSeconds | default 10)) }}
{{- end }}
{{- if lt (float64 .Values.terminationGracePeriodSeconds) (addf $longest 15) }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must be at least the longest targets.<name>.timeoutSeconds (%v) + 15, so the operator can finish in-flight requests and record them after SIGTERM" .Values.terminationGracePeriodSeconds $longest) }}
{{- end }}
{{- if lt (float64 .Values.terminationGracePeriodSeconds) (addf (float64 .Values.config.shutdownGraceSeconds) 5) }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must exceed config.shutdownGraceSeconds (%v) by at least 5" .Values.terminationGracePeriodSeconds .Values.config.shutdownGraceSeconds) }}
{{- end }}
{{- range $name := keys .Values.secret.targetAuthValues }}
{{- if not (and (hasKey $.Values.targets $name) (get $.Values.targets $name).authHeaderName) }}
{{- fail (printf "secret.targetAuthValues.%s: no target %q with an authHeaderName" $name $name) }}
{{- end }}
{{- end }}
{{- end }}
