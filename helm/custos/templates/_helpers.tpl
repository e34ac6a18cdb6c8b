{{/* Names, labels, the image, the environment and the checks shared by every template. */}}

{{- define "custos.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name, at most 63 characters; the release name alone when it already contains the chart's. */}}
{{- define "custos.fullname" -}}
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

{{/* A component's resource name: "<fullname>-<component>", the suffix kept whole when the name is cut. */}}
{{- define "custos.componentName" -}}
{{- $suffix := printf "-%s" .component }}
{{- printf "%s%s" (include "custos.fullname" .root | trunc (int (sub 63 (len $suffix))) | trimSuffix "-") $suffix }}
{{- end }}

{{- define "custos.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "custos.selectorLabels" -}}
app.kubernetes.io/name: {{ include "custos.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "custos.labels" -}}
helm.sh/chart: {{ include "custos.chart" . }}
{{ include "custos.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | replace "+" "_" | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: custos
{{- end }}

{{/* Selector labels of one component: dict "root" $ "component" "api" */}}
{{- define "custos.componentSelectorLabels" -}}
{{ include "custos.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "custos.componentLabels" -}}
{{ include "custos.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "custos.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "custos.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret the app pods read: existingSecret, or the one the chart creates. */}}
{{- define "custos.secretName" -}}
{{- default (include "custos.fullname" .) .Values.existingSecret }}
{{- end }}

{{/* The Secret the migration Job reads. */}}
{{- define "custos.migrationSecretName" -}}
{{- if .Values.migrations.existingSecret }}
{{- .Values.migrations.existingSecret }}
{{- else if .Values.existingSecret }}
{{- .Values.existingSecret }}
{{- else }}
{{- include "custos.componentName" (dict "root" . "component" "migrations") }}
{{- end }}
{{- end }}

{{- define "custos.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* CUSTOS_PUBLIC_URL: publicUrl, or the first ingress host. */}}
{{- define "custos.publicUrl" -}}
{{- if .Values.publicUrl }}
{{- .Values.publicUrl | trimSuffix "/" }}
{{- else if and .Values.api.ingress.enabled .Values.api.ingress.hosts }}
{{- $host := (first .Values.api.ingress.hosts).host }}
{{- $tls := false }}
{{- range .Values.api.ingress.tls }}
{{- if has $host (.hosts | default list) }}
{{- $tls = true }}
{{- end }}
{{- end }}
{{- printf "%s://%s" (ternary "https" "http" $tls) $host }}
{{- end }}
{{- end }}

{{/* Whether the Redis URL reaches the pods: from the chart's Secret, or maybe from existingSecret. */}}
{{- define "custos.hasRedis" -}}
{{- if or .Values.existingSecret .Values.redis.url }}true{{ end }}
{{- end }}

{{/*
The checks values.schema.json cannot make without quoting a secret back in its error message. Rendered by
the ConfigMap, which every install has; each message names the value, never its content.
*/}}
{{- define "custos.validate" -}}
{{- $v := .Values }}
{{- $sensitive := dict "database.url" $v.database.url "database.migrationUrl" $v.database.migrationUrl "redis.url" $v.redis.url "rootKeys" $v.rootKeys "bootstrapAdminKey" $v.bootstrapAdminKey "audit.forwardSecret" $v.audit.forwardSecret }}
{{- if $v.existingSecret }}
{{- range $name := keys $sensitive | sortAlpha }}
{{- if get $sensitive $name }}
{{- fail (printf "%s is set, but existingSecret %q is used: put the value in that Secret (the chart's README, Secrets) and leave %s empty" $name $v.existingSecret $name) }}
{{- end }}
{{- end }}
{{- else }}
{{- $_ := required "database.url is required: the PostgreSQL URL of the application's role (DATABASE_URL), or name a Secret holding DATABASE_URL and CUSTOS_ROOT_KEYS in existingSecret. The embedded PostgreSQL is not for Kubernetes." $v.database.url }}
{{- $_ = required "rootKeys is required: the managed root keyring CUSTOS_ROOT_KEYS (v1:<base64 of 32 bytes>), or name a Secret holding DATABASE_URL and CUSTOS_ROOT_KEYS in existingSecret. Without it every pod would generate a root key of its own." $v.rootKeys }}
{{- if not (regexMatch "^postgres(ql)?://" $v.database.url) }}
{{- fail "database.url must be a postgres:// or postgresql:// URL" }}
{{- end }}
{{- if and $v.database.migrationUrl (not (regexMatch "^postgres(ql)?://" $v.database.migrationUrl)) }}
{{- fail "database.migrationUrl must be a postgres:// or postgresql:// URL" }}
{{- end }}
{{- if and $v.redis.url (not (regexMatch "^rediss?://" $v.redis.url)) }}
{{- fail "redis.url must be a redis:// or rediss:// URL" }}
{{- end }}
{{- if not (regexMatch "^\\s*v[1-9][0-9]{0,8}:[A-Za-z0-9+/]{43}=\\s*(,\\s*v[1-9][0-9]{0,8}:[A-Za-z0-9+/]{43}=\\s*)*$" $v.rootKeys) }}
{{- fail "rootKeys must look like v1:<standard base64 of 32 bytes>[,v2:…]" }}
{{- end }}
{{- if and $v.bootstrapAdminKey (not (regexMatch "^[\\x21-\\x7e]{32,512}$" $v.bootstrapAdminKey)) }}
{{- fail "bootstrapAdminKey must be 32 to 512 printable ASCII characters without spaces" }}
{{- end }}
{{- if and (regexMatch "^https?://" $v.audit.forward) (not $v.audit.forwardSecret) }}
{{- fail "audit.forward is a URL: audit.forwardSecret (at least 32 characters) is required to sign the batches" }}
{{- end }}
{{- if and $v.audit.forwardSecret (lt (len $v.audit.forwardSecret) 32) }}
{{- fail "audit.forwardSecret must be at least 32 characters" }}
{{- end }}
{{- end }}
{{- $reserved := list "HOST" "PORT" "CUSTOS_PUBLIC_URL" "CUSTOS_DATA_DIR" "CUSTOS_ROLE" "CUSTOS_MIGRATIONS_RUN" "CUSTOS_LOG_LEVEL" "CUSTOS_DB_POOL_SIZE" "CUSTOS_QUEUE_PREFIX" "CUSTOS_TRUST_PROXY" "CUSTOS_AWS_AMBIENT_KEY_ARNS" "CUSTOS_AUDIT_FORWARD" "CUSTOS_AUDIT_RETENTION_MONTHS" "CUSTOS_TEST_FAILPOINTS" "DATABASE_URL" "CUSTOS_MIGRATION_DATABASE_URL" "REDIS_URL" "CUSTOS_ROOT_KEYS" "CUSTOS_BOOTSTRAP_ADMIN_KEY" "CUSTOS_AUDIT_FORWARD_SECRET" }}
{{- range $name := keys $v.config | sortAlpha }}
{{- if has $name $reserved }}
{{- fail (printf "config.%s: the chart sets %s itself (sensitive variables come from the Secret); use its own value (README of the chart)" $name $name) }}
{{- end }}
{{- end }}
{{- if and $v.api.ingress.enabled (not $v.api.ingress.hosts) }}
{{- fail "api.ingress.enabled needs at least one entry in api.ingress.hosts" }}
{{- end }}
{{- if and $v.api.autoscaling.enabled (gt (int $v.api.autoscaling.minReplicas) (int $v.api.autoscaling.maxReplicas)) }}
{{- fail "api.autoscaling.minReplicas is above api.autoscaling.maxReplicas" }}
{{- end }}
{{- range $component := list "api" "worker" }}
{{- $pdb := (get $v $component).podDisruptionBudget }}
{{- if and $pdb.enabled (not (kindIs "invalid" $pdb.minAvailable)) (not (kindIs "invalid" $pdb.maxUnavailable)) }}
{{- fail (printf "%s.podDisruptionBudget: set minAvailable or maxUnavailable, not both (set the other to null)" $component) }}
{{- end }}
{{- end }}
{{- end }}

{{/* One env entry from the app Secret: dict "root" $ "key" "REDIS_URL" "optional" true */}}
{{- define "custos.secretEnv" -}}
- name: {{ .key }}
  valueFrom:
    secretKeyRef:
      name: {{ include "custos.secretName" .root }}
      key: {{ .key }}
      {{- if .optional }}
      optional: true
      {{- end }}
{{- end }}

{{/*
The environment of an app container: dict "root" $ "component" "api"|"worker". The plain settings come from
the ConfigMap (envFrom); here the role and, key by key, only the secrets the role uses. The api never gets
CUSTOS_MIGRATION_DATABASE_URL; the worker only when audit retention is on.
*/}}
{{- define "custos.appEnv" -}}
{{- $root := .root }}
{{- $v := $root.Values }}
{{- $existing := $v.existingSecret -}}
- name: CUSTOS_ROLE
  value: {{ .component }}
{{ include "custos.secretEnv" (dict "root" $root "key" "DATABASE_URL") }}
{{ include "custos.secretEnv" (dict "root" $root "key" "CUSTOS_ROOT_KEYS") }}
{{- if or $existing $v.redis.url }}
{{ include "custos.secretEnv" (dict "root" $root "key" "REDIS_URL" "optional" $existing) }}
{{- end }}
{{- if or $existing $v.bootstrapAdminKey }}
{{ include "custos.secretEnv" (dict "root" $root "key" "CUSTOS_BOOTSTRAP_ADMIN_KEY" "optional" $existing) }}
{{- end }}
{{- if eq .component "worker" }}
{{- if $v.audit.forward }}
- name: CUSTOS_AUDIT_FORWARD
  value: {{ $v.audit.forward | quote }}
{{- if or $existing $v.audit.forwardSecret }}
{{ include "custos.secretEnv" (dict "root" $root "key" "CUSTOS_AUDIT_FORWARD_SECRET" "optional" $existing) }}
{{- end }}
{{- end }}
{{- if not (kindIs "invalid" $v.audit.retentionMonths) }}
- name: CUSTOS_AUDIT_RETENTION_MONTHS
  value: {{ $v.audit.retentionMonths | int | quote }}
{{- if or $existing $v.database.migrationUrl }}
{{ include "custos.secretEnv" (dict "root" $root "key" "CUSTOS_MIGRATION_DATABASE_URL" "optional" $existing) }}
{{- end }}
{{- end }}
{{- end }}
{{- with (get $v .component).extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The api or worker Deployment's pod template: dict "root" $ "component" "api"|"worker" */}}
{{- define "custos.appPod" -}}
{{- $root := .root }}
{{- $v := $root.Values }}
{{- $c := get $v .component }}
{{- $sel := dict "root" $root "component" .component -}}
metadata:
  labels:
    {{- include "custos.componentSelectorLabels" $sel | nindent 4 }}
    {{- with $v.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
    {{- if not $v.existingSecret }}
    checksum/secret: {{ include (print $root.Template.BasePath "/secret.yaml") $root | sha256sum }}
    {{- end }}
    {{- if $v.metrics.podAnnotations }}
    prometheus.io/scrape: "true"
    prometheus.io/port: {{ $v.port | int | quote }}
    prometheus.io/path: /metrics
    {{- end }}
    {{- with $v.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "custos.serviceAccountName" $root }}
  automountServiceAccountToken: {{ $v.serviceAccount.automountServiceAccountToken }}
  # Service links would add <SERVICE>_PORT-style variables, some of them CUSTOS_*.
  enableServiceLinks: false
  {{- with $v.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml $v.podSecurityContext | nindent 4 }}
  terminationGracePeriodSeconds: {{ $c.terminationGracePeriodSeconds | int }}
  {{- with $c.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  containers:
    - name: {{ .component }}
      image: {{ include "custos.image" $root }}
      imagePullPolicy: {{ $v.image.pullPolicy }}
      command:
        - node
        {{- range $v.nodeFlags }}
        - {{ . | quote }}
        {{- end }}
        - dist/src/main.js
      ports:
        - name: http
          containerPort: {{ $v.port | int }}
          protocol: TCP
      envFrom:
        - configMapRef:
            name: {{ include "custos.fullname" $root }}
      env:
        {{- include "custos.appEnv" $sel | nindent 8 }}
      startupProbe:
        httpGet:
          path: /healthz
          port: http
        periodSeconds: {{ $v.probes.startup.periodSeconds | int }}
        timeoutSeconds: {{ $v.probes.startup.timeoutSeconds | int }}
        failureThreshold: {{ $v.probes.startup.failureThreshold | int }}
      livenessProbe:
        httpGet:
          path: /healthz
          port: http
        periodSeconds: {{ $v.probes.liveness.periodSeconds | int }}
        timeoutSeconds: {{ $v.probes.liveness.timeoutSeconds | int }}
        failureThreshold: {{ $v.probes.liveness.failureThreshold | int }}
      readinessProbe:
        httpGet:
          path: /readyz
          port: http
        periodSeconds: {{ $v.probes.readiness.periodSeconds | int }}
        timeoutSeconds: {{ $v.probes.readiness.timeoutSeconds | int }}
        failureThreshold: {{ $v.probes.readiness.failureThreshold | int }}
        successThreshold: {{ $v.probes.readiness.successThreshold | int }}
      resources:
        {{- toYaml $c.resources | nindent 8 }}
      securityContext:
        {{- toYaml $v.securityContext | nindent 8 }}
      volumeMounts:
        - name: tmp
          mountPath: /tmp
  volumes:
    - name: tmp
      emptyDir:
        sizeLimit: {{ $v.tmpVolume.sizeLimit }}
  {{- with $c.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $c.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $c.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $c.topologySpreadConstraints }}
  {{- $constraints := list }}
  {{- range . }}
  {{- $tsc := deepCopy . }}
  {{- if not (hasKey $tsc "labelSelector") }}
  {{- $_ := set $tsc "labelSelector" (dict "matchLabels" (include "custos.componentSelectorLabels" $sel | fromYaml)) }}
  {{- end }}
  {{- $constraints = append $constraints $tsc }}
  {{- end }}
  topologySpreadConstraints:
    {{- toYaml $constraints | nindent 4 }}
  {{- end }}
{{- end }}
