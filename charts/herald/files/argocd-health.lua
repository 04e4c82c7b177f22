-- Argo CD health check for herald.dev/ScheduledPost.
-- Install as `resource.customizations.health.herald.dev_ScheduledPost` in argocd-cm (see the
-- chart's README). Argo CD runs it with the live object in `obj` and reads `status` and
-- `message` from the table it returns. Plain Lua 5.1 and no library calls, so it runs in
-- Argo CD's sandbox without useOpenLibs. Tested by tests/unit/test_argocd_health.py.
local hs = {}
local status = obj.status

if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Herald operator to accept the post"
  return hs
end

-- An edit the operator has not seen yet: what the status says is about the old spec.
local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= nil
    and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the Herald operator to see generation " .. generation
  return hs
end

local phase = status.phase
local message = status.message

if phase == "Pending" then
  -- Nothing written yet (the CRD's default status): the operator writes the status first
  -- when it claims the post, and dispatches it at spec.publishAt meanwhile.
  local spec = obj.spec or {}
  if spec.suspend then
    hs.status = "Progressing"
    hs.message = "Waiting for the Herald operator to suspend the post"
    return hs
  end
  hs.status = "Healthy"
  message = "Publishes at " .. (spec.publishAt or "?") .. " via target " .. (spec.target or "default")
elseif phase == "Scheduled" then
  hs.status = "Healthy"
  if message == nil then
    message = "Publishes at " .. (status.nextAttemptAt or (obj.spec and obj.spec.publishAt) or "?")
  end
elseif phase == "Published" then
  hs.status = "Healthy"
  if message == nil then
    message = "Published at " .. (status.publishedAt or "?")
  end
elseif phase == "Suspended" then
  hs.status = "Suspended"
elseif phase == "Publishing" or phase == "Retrying" then
  hs.status = "Progressing"
elseif phase == "Failed" then
  hs.status = "Degraded"
  local code = status.lastError and status.lastError.code
  if code ~= nil and message ~= nil then
    message = code .. ": " .. message
  end
else
  hs.status = "Unknown"
  message = "Unknown phase " .. phase
end

hs.message = message or phase
return hs
