{{/*
Names. The API domain and the driver names come from the code (vendors/base.py: DOMAIN,
VendorNames.driver); tests/chart checks that these helpers render the same strings.
*/}}
{{- define "tessera.domain" -}}tessera.dev{{- end -}}

{{- define "tessera.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tessera.fullname" -}}
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

{{- define "tessera.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every object. */}}
{{- define "tessera.labels" -}}
helm.sh/chart: {{ include "tessera.chart" . }}
app.kubernetes.io/name: {{ include "tessera.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tessera
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The opt-out label: our own pods never go through our webhook. */}}
{{- define "tessera.optOutLabel" -}}
{{ include "tessera.domain" . }}/webhook: ignore
{{- end -}}

{{/* Webhook names. */}}
{{- define "tessera.webhook.fullname" -}}
{{- printf "%s-webhook" (include "tessera.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- define "tessera.webhook.tlsSecret" -}}
{{- printf "%s-tls" (include "tessera.webhook.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- define "tessera.webhook.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tessera.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: webhook
{{- end -}}

{{/* Vendors the webhook converts: webhook.vendors, or every enabled vendor (sorted). */}}
{{- define "tessera.webhook.vendors" -}}
{{- if .Values.webhook.vendors -}}
{{- join "," .Values.webhook.vendors -}}
{{- else -}}
{{- $enabled := list -}}
{{- range $name, $v := .Values.vendors -}}
{{- if $v.enabled -}}{{- $enabled = append $enabled $name -}}{{- end -}}
{{- end -}}
{{- join "," $enabled -}}
{{- end -}}
{{- end -}}

{{/* Driver names: call with (dict "root" $ "vendor" $name). */}}
{{- define "tessera.driver.name" -}}
{{- printf "%s.%s" .vendor (include "tessera.domain" .root) -}}
{{- end -}}
{{- define "tessera.driver.fullname" -}}
{{- printf "%s-%s-driver" (include "tessera.fullname" .root) .vendor | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- define "tessera.driver.serviceAccount" -}}
{{- printf "%s-driver" (include "tessera.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{/* The driver's own kubelet plugin directory (DRA socket, checkpoint): call with (dict "root" $ "vendor" $name). */}}
{{- define "tessera.driver.pluginDir" -}}
{{- printf "%s/plugins/%s" (trimSuffix "/" .root.Values.driver.kubeletDir) (include "tessera.driver.name" .) -}}
{{- end -}}
{{- define "tessera.driver.registryDir" -}}
{{- printf "%s/plugins_registry" (trimSuffix "/" .Values.driver.kubeletDir) -}}
{{- end -}}

{{/*
Tessera's directories on the nodes (comma list): the host library dir (libvgpu.so, limits and usage
files), the CDI dir, the registration dir and the plugin dir of every enabled driver. The drivers
mount exactly these; the webhook refuses pods with shares that mount any of them as hostPath
(vendors/base.py host_dirs computes the same list from the drivers' defaults).
*/}}
{{- define "tessera.hostDirs" -}}
{{- $d := .Values.driver -}}
{{- $dirs := list (trimSuffix "/" $d.hostLibDir) (trimSuffix "/" $d.cdiDir) (include "tessera.driver.registryDir" .) -}}
{{- range $vendor, $v := .Values.vendors -}}
{{- if $v.enabled -}}{{- $dirs = append $dirs (include "tessera.driver.pluginDir" (dict "root" $ "vendor" $vendor)) -}}{{- end -}}
{{- end -}}
{{- join "," $dirs -}}
{{- end -}}

{{/*
The cluster's sharing policy, as env of the webhook and of every driver (the same flags in both): the
webhook writes claims within it, the drivers honour a claim's own SharingConfig only within it.
*/}}
{{- define "tessera.policyEnv" -}}
{{- $p := .Values.policy -}}
{{- if and (eq $p.coreLimitPolicy "disable") (not $p.allowCoreLimitDisable) -}}
{{- fail "policy.coreLimitPolicy is disable but policy.allowCoreLimitDisable is false: set both, or choose default or force" -}}
{{- end -}}
- name: TESSERA_CORE_POLICY
  value: {{ $p.coreLimitPolicy | quote }}
- name: TESSERA_ALLOW_HIGH_PRIORITY
  value: {{ $p.allowHighPriority | toString | quote }}
- name: TESSERA_ALLOW_OVERSUBSCRIBE
  value: {{ $p.allowOversubscribe | toString | quote }}
- name: TESSERA_ALLOW_CORE_LIMIT_DISABLE
  value: {{ $p.allowCoreLimitDisable | toString | quote }}
{{- end -}}

{{- define "tessera.driver.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tessera.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: driver
{{ include "tessera.domain" .root }}/vendor: {{ .vendor }}
{{- end -}}

{{/*
Vendor settings of a driver container (the vendor module's from_env reads them; tests/chart checks
the names against vendors/*.py): call with (dict "vendor" $name "values" $v "mock" $mock). Tool
paths only with the real backend; the other settings shape what both backends publish or prepare.
*/}}
{{- define "tessera.driver.vendorEnv" -}}
{{- $v := .values -}}
{{- if eq .vendor "ascend" }}
- name: TESSERA_ASCEND_VNPU_MODE
  value: {{ $v.vnpuMode | quote }}
{{- if not .mock }}
- name: TESSERA_NPU_SMI
  value: {{ $v.npuSmi | quote }}
{{- end }}
{{- else if eq .vendor "cambricon" }}
- name: TESSERA_CAMBRICON_VMEMORY_UNIT
  value: {{ $v.vmemoryUnit | toString | quote }}
{{- if not .mock }}
- name: TESSERA_CNMON
  value: {{ $v.cnmon | quote }}
{{- end }}
{{- else if eq .vendor "hygon" }}
- name: TESSERA_HYGON_HYHAL_DIR
  value: {{ $v.hyhalDir | quote }}
- name: TESSERA_HYGON_DRIVER_DIR
  value: {{ $v.driverDir | quote }}
{{- if not .mock }}
- name: TESSERA_HY_SMI
  value: {{ $v.hySmi | quote }}
{{- end }}
{{- else if eq .vendor "iluvatar" }}
{{- if not .mock }}
- name: TESSERA_IXSMI
  value: {{ $v.ixsmi | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Image reference: call with (dict "image" .Values.x.image "root" $). */}}
{{- define "tessera.image" -}}
{{- $repo := .image.repository -}}
{{- if .image.registry -}}{{- $repo = printf "%s/%s" .image.registry .image.repository -}}{{- end -}}
{{- if .image.digest -}}
{{- printf "%s@%s" $repo .image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (default .root.Chart.AppVersion .image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The security context every container gets, root or not: no privilege gain, no capabilities
(but those a caller passing (dict "addCapabilities" (list ...)) names), read-only root filesystem,
the runtime's default seccomp profile. */}}
{{- define "tessera.restrictedContainer" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
  {{- if and (kindIs "map" .) (hasKey . "addCapabilities") }}
  add: {{ .addCapabilities | toJson }}
  {{- end }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Cluster exporter names. */}}
{{- define "tessera.exporter.fullname" -}}
{{- printf "%s-exporter" (include "tessera.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- define "tessera.exporter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tessera.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: exporter
{{- end -}}

{{/*
The webhook's node-spread admission window (seconds): twice the drivers' occupancy interval, the time
a slice may take to show an allocation; 2 where occupancy is off (webhook/spreading.py).
*/}}
{{- define "tessera.spreadWindow" -}}
{{- $i := float64 .Values.driver.occupancyIntervalSeconds -}}
{{- if gt $i 0.0 -}}{{- mulf 2.0 $i -}}{{- else -}}2{{- end -}}
{{- end -}}
