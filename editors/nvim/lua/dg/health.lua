--- :checkhealth dg: Neovim, the server command, the model and the device (configured and, when a
--- server runs, what it reports).
local M = {}

function M.check()
  local health = vim.health
  health.start('dg: Neovim')
  local version = tostring(vim.version())
  if vim.fn.has('nvim-0.10') ~= 1 then
    return health.error('Neovim ' .. version .. ' is too old: dg needs 0.10 or newer')
  end
  health.ok(('Neovim %s: ghost text from %s'):format(version, vim.lsp.inline_completion
    and 'vim.lsp.inline_completion' or 'dg extmarks (vim.lsp.inline_completion arrives in 0.12)'))

  local options = require('dg.config').options
  if not options then
    return health.warn("require('dg').setup() has not run", { "call require('dg').setup({}) in your config" })
  end
  local opts = options.server
  health.start('dg: server')
  local cmd = table.concat(opts.cmd, ' ')
  if vim.fn.executable(opts.cmd[1]) == 1 then
    health.ok(('server command: %s (%s)'):format(cmd, vim.fn.exepath(opts.cmd[1])))
  else
    health.error(('server command: %s is not executable'):format(cmd),
      { 'pip install dg-lsp into a virtual environment', "set server.cmd = { '/path/to/.venv/bin/dg-lsp' }" })
  end
  health.info('filetypes: ' .. table.concat(opts.filetypes, ', '))
  local settings = opts.settings
  local model = vim.tbl_get(settings, 'model', 'path') or vim.env.DG_LSP_MODEL or 'the embedded model'
  health.info(('backend: %s; model: %s'):format(settings.backend or 'engine', model))
  health.info('device: ' .. (vim.tbl_get(settings, 'model', 'device') or 'auto'))

  health.start('dg: running server')
  local clients = require('dg.server').clients()
  if #clients == 0 then
    return health.info('no dg-lsp server is running (open a ' .. opts.filetypes[1] .. ' file)')
  end
  for _, client in ipairs(clients) do
    local line = require('dg.status').describe(client)
    local state = require('dg.status').get(client.id).state
    if state == 'error' then
      health.error(line, { 'check model.path and model.device in server.settings', ':LspLog shows the server log' })
    elseif state == 'ready' then
      health.ok(line)
    else
      health.info(line)
    end
  end
end

return M
