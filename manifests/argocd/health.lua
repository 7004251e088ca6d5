-- Argo CD health check for serving.servedmodel.io/ServedModel.
-- Install: add this script to argocd-cm as
--   resource.customizations.health.serving.servedmodel.io_ServedModel
-- (see argocd-cm-patch.yaml). It reads the kstatus conditions the operator writes.
local hs = {}

local function condition(kind)
  if obj.status ~= nil and obj.status.conditions ~= nil then
    for _, c in ipairs(obj.status.conditions) do
      if c.type == kind then
        return c
      end
    end
  end
  return nil
end

if obj.status == nil or obj.status.observedGeneration == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end

if obj.metadata.generation ~= nil and obj.status.observedGeneration < obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. obj.metadata.generation
  return hs
end

local stalled = condition("Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = stalled.message or stalled.reason or "Stalled"
  return hs
end

local ready = condition("Ready")
-- spec.server.replicas 0 on purpose: no pod runs, and none should (Argo CD's "Suspended").
if ready ~= nil and ready.status == "True" and ready.reason == "Stopped" then
  hs.status = "Suspended"
  hs.message = ready.message or "Stopped"
  return hs
end

if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or "Serving"
  return hs
end

hs.status = "Progressing"
local serving = condition("Serving")
local reconciling = condition("Reconciling")
if serving ~= nil and serving.status == "True" then
  -- Updating, and every ready pod still answers: not down.
  hs.message = "Updating, still serving: " .. (serving.message or "")
elseif reconciling ~= nil and reconciling.status == "True" and reconciling.message ~= nil and reconciling.message ~= "" then
  hs.message = reconciling.message
elseif ready ~= nil and ready.message ~= nil and ready.message ~= "" then
  hs.message = ready.message
else
  hs.message = "Reconciling"
end
return hs
