{{/* Names and labels. */}}
{{- define "lm-saes.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "lm-saes.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Common labels; call with (dict "root" $ "component" "activation" "role" "service"). */}}
{{- define "lm-saes.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: lm-saes
{{ include "lm-saes.selectorLabels" . }}
lm-saes.io/role: {{ .role }}
{{- end -}}

{{- define "lm-saes.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lm-saes.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Pods of one role of this release (NetworkPolicy peers). */}}
{{- define "lm-saes.rolePeer" -}}
podSelector:
  matchLabels:
    app.kubernetes.io/name: {{ include "lm-saes.name" .root }}
    app.kubernetes.io/instance: {{ .root.Release.Name }}
    lm-saes.io/role: {{ .role }}
{{- end -}}

{{- define "lm-saes.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "lm-saes.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Image reference; call with (dict "root" $ "image" .image). */}}
{{- define "lm-saes.image" -}}
{{- printf "%s%s:%s" .root.Values.image.registry .image.repository (default (default .root.Chart.AppVersion .root.Values.image.tag) .image.tag) -}}
{{- end -}}

{{/* Stores: where the services find them, with credentials only by Secret reference. */}}
{{- define "lm-saes.mongodbSecretName" -}}{{ include "lm-saes.fullname" . }}-mongodb{{- end -}}
{{- define "lm-saes.minioSecretName" -}}{{ include "lm-saes.fullname" . }}-minio{{- end -}}

{{- define "lm-saes.documentsSecretRef" -}}
{{- if .Values.mongodb.enabled -}}
name: {{ include "lm-saes.mongodbSecretName" . }}
key: uri
{{- else if .Values.externalMongodb.uriSecret -}}
name: {{ .Values.externalMongodb.uriSecret }}
key: {{ .Values.externalMongodb.uriSecretKey }}
{{- else -}}
{{- fail "a document store is needed: set mongodb.enabled=true, or externalMongodb.uriSecret to a Secret holding the mongodb:// URI" -}}
{{- end -}}
{{- end -}}

{{- define "lm-saes.s3" -}}
{{- if .Values.minio.enabled -}}
endpoint: {{ printf "%s-minio:9000" (include "lm-saes.fullname" .) }}
secure: "0"
bucket: {{ .Values.minio.bucket }}
secret: {{ include "lm-saes.minioSecretName" . }}
accessKeyKey: root-user
secretKeyKey: root-password
region: ""
{{- else if and .Values.externalS3.endpoint .Values.externalS3.bucket .Values.externalS3.existingSecret -}}
endpoint: {{ .Values.externalS3.endpoint }}
secure: {{ ternary "1" "0" .Values.externalS3.secure | quote }}
bucket: {{ .Values.externalS3.bucket }}
secret: {{ .Values.externalS3.existingSecret }}
accessKeyKey: {{ .Values.externalS3.accessKeyKey }}
secretKeyKey: {{ .Values.externalS3.secretKeyKey }}
region: {{ .Values.externalS3.region | quote }}
{{- else -}}
{{- fail "an object store is needed: set minio.enabled=true, or externalS3.endpoint, externalS3.bucket and externalS3.existingSecret" -}}
{{- end -}}
{{- end -}}

{{/* A value kept across upgrades: the existing Secret's key if the release has one, else $default. */}}
{{- define "lm-saes.keptSecretValue" -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace .secret -}}
{{- if and $existing (hasKey (default dict $existing.data) .key) -}}
{{- index $existing.data .key | b64dec -}}
{{- else -}}
{{- .default -}}
{{- end -}}
{{- end -}}

{{/* Service auth: the Secret with `tokens.json` (the services' token table) and `service-token`
(the gateway's own token). There is no way to turn it off: the services refuse to start without it. */}}
{{- define "lm-saes.serviceAuthSecretName" -}}
{{- default (printf "%s-service-auth" (include "lm-saes.fullname" .)) .Values.serviceAuth.existingSecret -}}
{{- end -}}

{{/* Probe handler of a gRPC service; call with (dict "root" $ "port" .port). Native gRPC probes
cannot speak TLS, so with tls.enabled the image's health-check command runs instead. */}}
{{- define "lm-saes.grpcProbe" -}}
{{- if .root.Values.tls.enabled -}}
exec:
  command: ["python", "-m", "services.common.healthcheck"]
{{- else -}}
grpc:
  port: {{ .port }}
{{- end -}}
{{- end -}}

{{/* Container securityContext shared by every container. */}}
{{- define "lm-saes.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid | default 10001 }}
runAsGroup: {{ .uid | default 10001 }}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "lm-saes.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid | default 10001 }}
runAsGroup: {{ .uid | default 10001 }}
fsGroup: {{ .uid | default 10001 }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- /* The training service's Kubernetes executor: where job pods run and the env they need
(store settings as secretKeyRefs, never values). */ -}}
{{- define "lm-saes.jobExecutorEnv" -}}
{{- $root := .root -}}
{{- $s3 := .s3 -}}
{{- $jobs := $root.Values.kubernetesJobs -}}
{{- $env := list
  (dict "name" "LM_SAES_OBJECT_STORE" "value" (printf "s3://%s/%s" $s3.bucket $root.Values.objectStore.prefix))
  (dict "name" "LM_SAES_S3_ENDPOINT" "value" (toString $s3.endpoint))
  (dict "name" "LM_SAES_S3_SECURE" "value" (toString $s3.secure))
  (dict "name" "LM_SAES_DOCUMENTS" "valueFrom" (dict "secretKeyRef" (fromYaml (include "lm-saes.documentsSecretRef" $root))))
  (dict "name" "AWS_ACCESS_KEY_ID" "valueFrom" (dict "secretKeyRef" (dict "name" $s3.secret "key" $s3.accessKeyKey)))
  (dict "name" "AWS_SECRET_ACCESS_KEY" "valueFrom" (dict "secretKeyRef" (dict "name" $s3.secret "key" $s3.secretKeyKey))) -}}
{{- $settings := dict
  "namespace" $root.Release.Namespace
  "image" (include "lm-saes.image" (dict "root" $root "image" .svc.image))
  "workers" (int $jobs.workers)
  "procs_per_worker" (int (default 1 $jobs.procsPerWorker))
  "gpus_per_worker" (ternary (int $jobs.gpusPerWorker) 0 $root.Values.gpu.enabled)
  "cpu" (toString $jobs.cpu) "memory" $jobs.memory
  "node_selector" (ternary $root.Values.gpu.nodeSelector (dict) $root.Values.gpu.enabled)
  "tolerations" (ternary $root.Values.gpu.tolerations (list) $root.Values.gpu.enabled)
  "service_account" (include "lm-saes.serviceAccountName" $root)
  "labels" (dict "app.kubernetes.io/name" (include "lm-saes.name" $root) "app.kubernetes.io/instance" $root.Release.Name "lm-saes.io/role" "service")
  "env" $env -}}
{{- if and $root.Values.gpu.enabled $root.Values.gpu.runtimeClassName }}
{{- $_ := set $settings "runtime_class_name" $root.Values.gpu.runtimeClassName }}
{{- end }}
- name: LM_SAES_EXECUTOR
  value: kubernetes
- name: LM_SAES_KUBERNETES
  value: {{ toJson $settings | quote }}
{{- end -}}
