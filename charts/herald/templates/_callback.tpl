{{/*
The callback receiver (`herald callback-server`): a container of the operator's pods (the
default), or of its own Deployment (callback.separateDeployment). Rendered by both.
*/}}
{{- define "herald.callbackContainer" -}}
- name: callback
  image: {{ include "herald.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args:
    - callback-server
    {{- with .Values.callback.extraArgs }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  env:
    - name: HERALD_CONFIG_FILE
      value: /etc/herald/config.yaml
    - name: HERALD_IDENTITY
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
    {{- with .Values.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  ports:
    # POST /v1/callbacks, and /healthz, /readyz, /metrics, /openapi.json.
    - name: callback
      containerPort: {{ .Values.ports.callback }}
      protocol: TCP
  startupProbe:
    httpGet:
      path: /healthz
      port: callback
    {{- toYaml .Values.probes.startup | nindent 4 }}
  livenessProbe:
    httpGet:
      path: /healthz
      port: callback
    {{- toYaml .Values.probes.liveness | nindent 4 }}
  readinessProbe:
    httpGet:
      path: /readyz
      port: callback
    {{- toYaml .Values.probes.readiness | nindent 4 }}
  resources:
    {{- toYaml .Values.resources.callback | nindent 4 }}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  volumeMounts:
    - name: config
      mountPath: /etc/herald/config.yaml
      subPath: config.yaml
      readOnly: true
    - name: callback-secrets
      mountPath: /etc/herald/secrets
      readOnly: true
    - name: tmp
      mountPath: /tmp
    {{- with .Values.extraVolumeMounts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end }}

{{/*
The Secret keys the callback receiver sees. It is reachable from n8n (maybe through an
ingress) and only verifies callbacks: it never sees the signing key or the n8n auth values.
*/}}
{{- define "herald.callbackSecretsVolume" -}}
- name: callback-secrets
  secret:
    secretName: {{ include "herald.secretName" . }}
    defaultMode: 0440
    items:
      - key: callback-key
        path: callback-key
      {{- if .Values.callbackSharedSecret.enabled }}
      - key: callback-shared-secret
        path: callback-shared-secret
      {{- end }}
{{- end }}
