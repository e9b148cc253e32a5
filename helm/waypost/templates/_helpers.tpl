{{/* Chart name and release-scoped names. */}}
{{- define "waypost.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Name of one server's objects: (dict "root" $ "server" "turn-server") */}}
{{- define "waypost.name" -}}
{{- printf "%s-%s" (include "waypost.fullname" .root) .server -}}
{{- end -}}

{{- define "waypost.labels" -}}
app.kubernetes.io/name: {{ .server }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/part-of: waypost
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{- define "waypost.selector" -}}
app.kubernetes.io/name: {{ .server }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{- define "waypost.image" -}}
{{- printf "%s/%s:%s" .root.Values.image.repository .server (.root.Values.image.tag | default .root.Chart.AppVersion) -}}
{{- end -}}

{{/*
Renders a map as TOML top-level keys, sorted. Strings and lists go through toJson (JSON string
escapes are valid TOML basic-string escapes); numbers are integers; booleans as is.
*/}}
{{- define "waypost.toml" -}}
{{- range $k, $v := . }}
{{- if or (kindIs "string" $v) (kindIs "slice" $v) }}
{{ $k }} = {{ toJson $v }}
{{- else if kindIs "bool" $v }}
{{ $k }} = {{ $v }}
{{- else if kindIs "invalid" $v }}
{{- else }}
{{ $k }} = {{ $v | int64 }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Pod-level security context: PodSecurity "restricted". */}}
{{- define "waypost.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "waypost.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/*
Servers whose admin listener may bind a non-loopback address (they have the `admin-public` key).
Any server without the key would keep it on loopback: probes then run busybox wget inside the
pod, and Prometheus could not scrape it (all four servers have the key today). tests/tests/deploy.rs checks this table against the servers' config structs.
*/}}
{{- define "waypost.adminPublic" -}}
{{- $t := dict "nameserver" true "dht-proxy" true "turn-server" true "dht-node" true -}}
{{- if get $t . }}true{{ end -}}
{{- end -}}

{{/*
Whether this deployment binds its admin listener on the pod address: (dict "root" $ "server" "x").
Never for TURN in hostNetwork mode, where the pod address is the node's public address and no
NetworkPolicy applies: there it stays on loopback with exec probes.
*/}}
{{- define "waypost.adminExposed" -}}
{{- if include "waypost.adminPublic" .server -}}
{{- if not (and (eq .server "turn-server") (eq .root.Values.turn.mode "hostNetwork")) }}true{{ end -}}
{{- end -}}
{{- end -}}

{{/* TOML keys of the admin listener: (dict "root" $ "server" "x") as a YAML map. */}}
{{- define "waypost.adminKeys" -}}
{{- if include "waypost.adminExposed" . -}}
admin-listen: {{ printf "0.0.0.0:%d" (int .root.Values.admin.port) | quote }}
admin-public: true
{{- else -}}
admin-listen: {{ printf "127.0.0.1:%d" (int .root.Values.admin.port) | quote }}
{{- end -}}
{{- end -}}

{{/* One probe on the admin endpoint: (dict "root" $ "server" "x" "path" "/healthz") */}}
{{- define "waypost.probeAction" -}}
{{- if include "waypost.adminExposed" . -}}
httpGet:
  path: {{ .path }}
  port: admin
{{- else -}}
exec:
  command: ["/usr/local/bin/busybox", "wget", "-q", "-T", "2", "-O", "/dev/null", {{ printf "http://127.0.0.1:%d%s" (int .root.Values.admin.port) .path | quote }}]
{{- end -}}
{{- end -}}

{{/* Liveness, readiness and startup probes on the admin endpoint: (dict "root" $ "server" "x") */}}
{{- define "waypost.probes" -}}
livenessProbe:
  {{- include "waypost.probeAction" (dict "root" .root "server" .server "path" "/healthz") | nindent 2 }}
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 3
readinessProbe:
  {{- include "waypost.probeAction" (dict "root" .root "server" .server "path" "/readyz") | nindent 2 }}
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 2
startupProbe:
  {{- include "waypost.probeAction" (dict "root" .root "server" .server "path" "/healthz") | nindent 2 }}
  periodSeconds: 2
  timeoutSeconds: 3
  failureThreshold: 30
{{- end -}}

{{/* Common pod spec fields. */}}
{{- define "waypost.podCommon" -}}
automountServiceAccountToken: false
enableServiceLinks: false
securityContext:
  {{- include "waypost.podSecurityContext" . | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Admin Service (ClusterIP, metrics only) for one server: (dict "root" $ "server" "x") */}}
{{- define "waypost.adminService" -}}
{{- if include "waypost.adminExposed" . -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "waypost.name" . }}-admin
  labels:
    {{- include "waypost.labels" . | nindent 4 }}
    waypost.example/admin: "true"
spec:
  type: ClusterIP
  selector:
    {{- include "waypost.selector" . | nindent 4 }}
  ports:
    - name: admin
      port: {{ .root.Values.admin.port }}
      targetPort: admin
      protocol: TCP
{{- end -}}
{{- end -}}
